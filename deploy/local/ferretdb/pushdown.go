package main

// Conditional single-document writes on the fast path.
//
// FerretDB 1.x pushes a filter down to SQLite only when it is exactly {_id: <string|ObjectId>}; with
// any other key the whole collection is decoded and filtered in Go. The platform's conditional updates
// look like {_id: X, state: "pending"} or {_id: X, applied_events: {$ne: E}}. While the write lock is
// held, this file fetches document X by _id, evaluates the other conditions on it, and then either
// forwards the write with the filter narrowed to {_id: X} or answers "matched nothing" itself.
// Anything it does not fully understand is forwarded untouched (correct, only slower).

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"net"
	"strconv"
	"strings"
	"sync/atomic"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/bsontype"
)

var errUnsupported = errors.New("unsupported")

var nextRequestID atomic.Int32

func init() { nextRequestID.Store(1 << 30) }

// opMsgBody returns the kind-0 body and the kind-1 document sequences of an OP_MSG.
func opMsgBody(msg []byte) (bson.Raw, map[string][]bson.Raw, error) {
	if opCode(msg) != opMsg || msgFlags(msg)&1 != 0 { // checksum present: leave alone
		return nil, nil, errUnsupported
	}
	var body bson.Raw
	seqs := map[string][]bson.Raw{}
	pos := 20
	for pos < len(msg) {
		kind := msg[pos]
		pos++
		if pos+4 > len(msg) {
			return nil, nil, errUnsupported
		}
		size := int(binary.LittleEndian.Uint32(msg[pos : pos+4]))
		if size < 5 || pos+size > len(msg) {
			return nil, nil, errUnsupported
		}
		switch kind {
		case 0:
			body = bson.Raw(msg[pos : pos+size])
		case 1:
			section := msg[pos+4 : pos+size]
			end := bytes.IndexByte(section, 0)
			if end < 0 {
				return nil, nil, errUnsupported
			}
			ident := string(section[:end])
			rest := section[end+1:]
			for len(rest) >= 5 {
				n := int(binary.LittleEndian.Uint32(rest[:4]))
				if n < 5 || n > len(rest) {
					return nil, nil, errUnsupported
				}
				seqs[ident] = append(seqs[ident], bson.Raw(rest[:n]))
				rest = rest[n:]
			}
		default:
			return nil, nil, errUnsupported
		}
		pos += size
	}
	if body == nil {
		return nil, nil, errUnsupported
	}
	return body, seqs, nil
}

// buildOpMsg returns an OP_MSG with one body section.
func buildOpMsg(requestID, responseTo int32, body []byte) []byte {
	msg := make([]byte, 21, 21+len(body))
	binary.LittleEndian.PutUint32(msg[4:8], uint32(requestID))
	binary.LittleEndian.PutUint32(msg[8:12], uint32(responseTo))
	binary.LittleEndian.PutUint32(msg[12:16], uint32(opMsg))
	msg[20] = 0 // flags 0, then section kind 0
	msg = append(msg, body...)
	binary.LittleEndian.PutUint32(msg[0:4], uint32(len(msg)))
	return msg
}

func requestID(msg []byte) int32 { return int32(binary.LittleEndian.Uint32(msg[4:8])) }

// pushdown returns either a rewritten request to forward, or a reply to send without forwarding, or
// neither (forward the original). It must be called with the write lock held.
func pushdown(req []byte, backend net.Conn) (rewritten, reply []byte) {
	body, seqs, err := opMsgBody(req)
	if err != nil {
		return nil, nil
	}
	var cmd bson.D
	if err := bson.Unmarshal(body, &cmd); err != nil || len(cmd) == 0 {
		return nil, nil
	}
	name := cmd[0].Key
	coll, ok := cmd[0].Value.(string)
	if !ok {
		return nil, nil
	}
	db, _ := lookup(cmd, "$db").(string)

	var filterRaw bson.Raw
	var upsert bool
	var statement bson.D
	switch name {
	case "update":
		updates := seqs["updates"]
		if arr, ok := lookupRaw(body, "updates"); ok {
			updates = nil
			values, _ := arr.Array().Values()
			for _, v := range values {
				if doc, ok := v.DocumentOK(); ok {
					updates = append(updates, doc)
				}
			}
		}
		if len(updates) != 1 {
			return nil, nil
		}
		if err := bson.Unmarshal(updates[0], &statement); err != nil {
			return nil, nil
		}
		if multi, _ := lookup(statement, "multi").(bool); multi {
			return nil, nil
		}
		upsert, _ = lookup(statement, "upsert").(bool)
		filterRaw, _ = lookupDoc(updates[0], "q")
	case "findAndModify", "findandmodify":
		upsert, _ = lookup(cmd, "upsert").(bool)
		filterRaw, _ = lookupDoc(body, "query")
	default:
		return nil, nil
	}
	if filterRaw == nil {
		return nil, nil
	}
	id, conditions, ok := splitIDFilter(filterRaw)
	if !ok || len(conditions) == 0 {
		return nil, nil
	}
	for _, c := range conditions {
		if !supported(c.Value()) {
			return nil, nil
		}
	}
	doc, err := fetchByID(backend, db, coll, id)
	if err != nil {
		return nil, nil
	}
	matched := doc != nil
	for _, c := range conditions {
		if !matched {
			break
		}
		m, err := matches(doc, c.Key(), c.Value())
		if err != nil {
			return nil, nil
		}
		matched = m
	}
	if !matched {
		if upsert {
			return nil, nil // let FerretDB decide: insert, or a duplicate-key error when _id exists
		}
		return nil, noMatchReply(name, requestID(req))
	}
	narrowed := bson.D{{Key: "_id", Value: id}}
	var out bson.D
	if name == "update" {
		stmt := replace(statement, "q", narrowed)
		out = append(out, cmd...)
		if lookup(out, "updates") == nil { // the statements came as a kind-1 document sequence
			out = append(out, bson.E{Key: "updates", Value: bson.A{stmt}})
		} else {
			out = replace(out, "updates", bson.A{stmt})
		}
	} else {
		out = replace(append(bson.D{}, cmd...), "query", narrowed)
	}
	encoded, err := bson.Marshal(out)
	if err != nil {
		return nil, nil
	}
	return buildOpMsg(requestID(req), 0, encoded), nil
}

func noMatchReply(name string, responseTo int32) []byte {
	var body bson.D
	if name == "update" {
		body = bson.D{{Key: "n", Value: int32(0)}, {Key: "nModified", Value: int32(0)}, {Key: "ok", Value: 1.0}}
	} else {
		body = bson.D{
			{Key: "lastErrorObject", Value: bson.D{{Key: "n", Value: int32(0)}, {Key: "updatedExisting", Value: false}}},
			{Key: "value", Value: nil},
			{Key: "ok", Value: 1.0},
		}
	}
	encoded, _ := bson.Marshal(body)
	return buildOpMsg(nextRequestID.Add(1), responseTo, encoded)
}

// fetchByID returns the document with _id = id (nil when absent) using FerretDB's pushed-down path.
func fetchByID(backend net.Conn, db, coll string, id any) (bson.Raw, error) {
	cmd := bson.D{
		{Key: "find", Value: coll},
		{Key: "filter", Value: bson.D{{Key: "_id", Value: id}}},
		{Key: "limit", Value: int32(1)},
		{Key: "singleBatch", Value: true},
		{Key: "$db", Value: db},
	}
	encoded, err := bson.Marshal(cmd)
	if err != nil {
		return nil, err
	}
	if _, err := backend.Write(buildOpMsg(nextRequestID.Add(1), 0, encoded)); err != nil {
		return nil, err
	}
	reply, err := readMessage(backend)
	if err != nil {
		return nil, err
	}
	body, _, err := opMsgBody(reply)
	if err != nil {
		return nil, err
	}
	if ok, _ := asFloat(body.Lookup("ok")); ok != 1 {
		return nil, errors.New("find failed")
	}
	batch, ok := body.Lookup("cursor", "firstBatch").ArrayOK()
	if !ok {
		return nil, errors.New("no firstBatch")
	}
	values, err := batch.Values()
	if err != nil || len(values) == 0 {
		return nil, err
	}
	doc, ok := values[0].DocumentOK()
	if !ok {
		return nil, errors.New("not a document")
	}
	return doc, nil
}

// splitIDFilter returns the _id value and the other top-level conditions of a filter.
func splitIDFilter(filter bson.Raw) (any, []bson.RawElement, bool) {
	elements, err := filter.Elements()
	if err != nil {
		return nil, nil, false
	}
	var id any
	var rest []bson.RawElement
	for _, e := range elements {
		key := e.Key()
		if key == "_id" {
			v := e.Value()
			switch v.Type {
			case bsontype.String:
				id = v.StringValue()
			case bsontype.ObjectID:
				id = v.ObjectID()
			default:
				return nil, nil, false
			}
			continue
		}
		if strings.HasPrefix(key, "$") {
			return nil, nil, false // $or, $and, $expr ...: not ours to evaluate
		}
		rest = append(rest, e)
	}
	return id, rest, id != nil
}

var operators = map[string]bool{
	"$eq": true, "$ne": true, "$gt": true, "$gte": true, "$lt": true, "$lte": true,
	"$exists": true, "$in": true, "$nin": true,
}

// supported reports whether a condition uses only operators this file evaluates.
func supported(cond bson.RawValue) bool {
	doc, ok := cond.DocumentOK()
	if !ok {
		return cond.Type != bsontype.Regex && cond.Type != bsontype.Array
	}
	elements, err := doc.Elements()
	if err != nil || len(elements) == 0 {
		return false
	}
	if !strings.HasPrefix(elements[0].Key(), "$") {
		return false // equality with an embedded document: leave to FerretDB
	}
	for _, e := range elements {
		if !operators[e.Key()] {
			return false
		}
		if t := e.Value().Type; t == bsontype.EmbeddedDocument || t == bsontype.Regex {
			return false
		}
	}
	return true
}

// matches evaluates `path: cond` on doc with MongoDB's semantics for the supported operators.
func matches(doc bson.Raw, path string, cond bson.RawValue) (bool, error) {
	candidates, present := resolve(doc, strings.Split(path, "."))
	opDoc, isOps := cond.DocumentOK()
	if !isOps {
		return equalsAny(candidates, present, cond), nil
	}
	elements, err := opDoc.Elements()
	if err != nil {
		return false, err
	}
	for _, e := range elements {
		arg := e.Value()
		var ok bool
		switch e.Key() {
		case "$eq":
			ok = equalsAny(candidates, present, arg)
		case "$ne":
			ok = !equalsAny(candidates, present, arg)
		case "$exists":
			want := arg.Type != bsontype.Boolean || arg.Boolean()
			if arg.Type == bsontype.Int32 || arg.Type == bsontype.Int64 || arg.Type == bsontype.Double {
				n, _ := asFloat(arg)
				want = n != 0
			}
			ok = present == want
		case "$in", "$nin":
			values, err := arg.Array().Values()
			if err != nil {
				return false, err
			}
			found := false
			for _, v := range values {
				if equalsAny(candidates, present, v) {
					found = true
					break
				}
			}
			ok = found == (e.Key() == "$in")
		case "$gt", "$gte", "$lt", "$lte":
			for _, c := range candidates {
				cmp, comparable := compare(c, arg)
				if !comparable {
					continue
				}
				switch e.Key() {
				case "$gt":
					ok = cmp > 0
				case "$gte":
					ok = cmp >= 0
				case "$lt":
					ok = cmp < 0
				case "$lte":
					ok = cmp <= 0
				}
				if ok {
					break
				}
			}
		default:
			return false, errUnsupported
		}
		if !ok {
			return false, nil
		}
	}
	return true, nil
}

// resolve returns the values a dotted path reaches (an array leaf contributes itself and its elements)
// and whether the path exists.
func resolve(doc bson.Raw, parts []string) ([]bson.RawValue, bool) {
	v, err := doc.LookupErr(parts[0])
	if err != nil {
		return nil, false
	}
	for _, part := range parts[1:] {
		switch v.Type {
		case bsontype.EmbeddedDocument:
			v, err = v.Document().LookupErr(part)
		case bsontype.Array:
			if _, convErr := strconv.Atoi(part); convErr != nil {
				return nil, false // field of array elements: not supported here, treat as absent
			}
			v, err = v.Array().LookupErr(part)
		default:
			return nil, false
		}
		if err != nil {
			return nil, false
		}
	}
	out := []bson.RawValue{v}
	if v.Type == bsontype.Array {
		elems, _ := v.Array().Values()
		out = append(out, elems...)
	}
	return out, true
}

func equalsAny(candidates []bson.RawValue, present bool, want bson.RawValue) bool {
	if want.Type == bsontype.Null && !present {
		return true
	}
	for _, c := range candidates {
		if cmp, ok := compare(c, want); ok && cmp == 0 {
			return true
		}
		if c.Type == want.Type && bytes.Equal(c.Value, want.Value) {
			return true
		}
	}
	return false
}

func asFloat(v bson.RawValue) (float64, bool) {
	switch v.Type {
	case bsontype.Double:
		return v.Double(), true
	case bsontype.Int32:
		return float64(v.Int32()), true
	case bsontype.Int64:
		return float64(v.Int64()), true
	}
	return 0, false
}

// compare orders two values of comparable types; ok is false across type families.
func compare(a, b bson.RawValue) (int, bool) {
	if fa, ok := asFloat(a); ok {
		fb, ok := asFloat(b)
		if !ok || math.IsNaN(fa) || math.IsNaN(fb) {
			return 0, false
		}
		switch {
		case fa < fb:
			return -1, true
		case fa > fb:
			return 1, true
		}
		return 0, true
	}
	if a.Type != b.Type {
		return 0, false
	}
	switch a.Type {
	case bsontype.String:
		return strings.Compare(a.StringValue(), b.StringValue()), true
	case bsontype.DateTime:
		x, y := a.DateTime(), b.DateTime()
		switch {
		case x < y:
			return -1, true
		case x > y:
			return 1, true
		}
		return 0, true
	case bsontype.Boolean:
		x, y := a.Boolean(), b.Boolean()
		switch {
		case x == y:
			return 0, true
		case !x:
			return -1, true
		}
		return 1, true
	case bsontype.Null:
		return 0, true
	case bsontype.ObjectID:
		x, y := a.ObjectID(), b.ObjectID()
		return bytes.Compare(x[:], y[:]), true
	}
	return 0, false
}

func lookup(d bson.D, key string) any {
	for _, e := range d {
		if e.Key == key {
			return e.Value
		}
	}
	return nil
}

func lookupRaw(doc bson.Raw, key string) (bson.RawValue, bool) {
	v, err := doc.LookupErr(key)
	return v, err == nil
}

func lookupDoc(doc bson.Raw, key string) (bson.Raw, bool) {
	v, err := doc.LookupErr(key)
	if err != nil {
		return nil, false
	}
	return v.DocumentOK()
}

func replace(d bson.D, key string, value any) bson.D {
	out := make(bson.D, 0, len(d))
	for _, e := range d {
		if e.Key == key {
			e.Value = value
		}
		out = append(out, e)
	}
	return out
}
