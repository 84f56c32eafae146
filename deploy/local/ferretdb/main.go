// Command ferretdb-local runs FerretDB 1.x (MongoDB wire protocol over SQLite) for local development
// and CI. It embeds the library package rather than `go install`-ing cmd/ferretdb, whose build panics
// without version.txt (FerretDB issue #2982).
//
// FerretDB 1.x's SQLite backend runs update and findAndModify as a read followed by a write in separate
// SQLite transactions, so two concurrent conditional updates of one document can both "win" and
// concurrent $inc can lose increments (measured here: 3 of 10 racing `update_one({_id, state: "p"})`
// matched; 20 racing capped $inc left n=2 with 14 reported successes). MongoDB guarantees
// single-document atomicity, and the platform relies on it (leases, capacity). So FerretDB listens on a
// private Unix socket and this program fronts it on TCP, forwarding wire messages unchanged but holding
// its database's lock from the moment a write command is forwarded until its reply is back. Reads are
// not serialized. pushdown.go keeps conditional single-document writes on FerretDB's fast path.
package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	_ "net/http/pprof" // -pprof: where the database's CPU goes (see docs/benchmarks.md)
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/FerretDB/FerretDB/ferretdb"
)

const (
	opMsg          = 2013
	opQuery        = 2004
	flagMoreToCome = 1 << 1
	maxMessage     = 48_000_000
)

// writeCommands are the commands whose read-modify-write must not interleave.
var writeCommands = map[string]bool{
	"insert": true, "update": true, "delete": true, "findAndModify": true, "findandmodify": true,
}

// writeLocks holds one lock per database: each service owns its database (one SQLite file), so
// writes of different services need not wait for each other.
var (
	writeLocksMu sync.Mutex
	writeLocks   = map[string]*sync.Mutex{}
)

func writeLockOf(db string) *sync.Mutex {
	writeLocksMu.Lock()
	defer writeLocksMu.Unlock()
	lock, ok := writeLocks[db]
	if !ok {
		lock = &sync.Mutex{}
		writeLocks[db] = lock
	}
	return lock
}

var (
	indexer  *idIndexer
	seenMu   sync.Mutex
	seenColl = map[string]bool{} // "<db>/<collection>" whose _id lookup index is ensured
)

func main() {
	listen := flag.String("listen", "127.0.0.1:27017", "TCP address to listen on (loopback only)")
	dataDir := flag.String("data", "data", "directory for the SQLite databases")
	pprofAddr := flag.String("pprof", os.Getenv("FERRETDB_PPROF"), "serve Go's pprof here (loopback; empty: off)")
	flag.Parse()
	if *pprofAddr != "" {
		host, _, err := net.SplitHostPort(*pprofAddr)
		if ip := net.ParseIP(host); err != nil || (host != "localhost" && (ip == nil || !ip.IsLoopback())) {
			log.Fatalf("-pprof %q: a loopback host:port only", *pprofAddr)
		}
		go func() { log.Printf("pprof: %v", http.ListenAndServe(*pprofAddr, nil)) }()
	}

	if err := os.MkdirAll(*dataDir, 0o750); err != nil {
		log.Fatalf("cannot create data directory %s: %v", *dataDir, err)
	}
	indexer = newIDIndexer(*dataDir)
	socket := filepath.Join(*dataDir, "ferretdb.sock")
	_ = os.Remove(socket)

	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	f, err := ferretdb.New(&ferretdb.Config{
		Listener:  ferretdb.ListenerConfig{Unix: socket},
		Logger:    logger,
		Handler:   "sqlite",
		SQLiteURL: "file:" + *dataDir + "/",
	})
	if err != nil {
		log.Fatalf("cannot start FerretDB: %v", err)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	go func() {
		if err := f.Run(ctx); err != nil {
			log.Printf("FerretDB stopped: %v", err)
		}
	}()

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatalf("cannot listen on %s: %v", *listen, err)
	}
	go func() {
		<-ctx.Done()
		_ = ln.Close()
	}()
	log.Printf("FerretDB listening on %s (writes serialized per database), data in %s", *listen, *dataDir)
	for {
		client, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			log.Printf("accept: %v", err)
			continue
		}
		go serve(client, socket)
	}
}

func serve(client net.Conn, socket string) {
	defer client.Close()
	backend, err := dialWithRetry(socket, 10*time.Second)
	if err != nil {
		log.Printf("cannot reach FerretDB on %s: %v", socket, err)
		return
	}
	defer backend.Close()
	for {
		request, err := readMessage(client)
		if err != nil {
			return
		}
		name, coll, db := commandInfo(request)
		if isHandshake(request, name) {
			err = forwardHandshake(request, backend, client)
		} else if writeCommands[name] {
			err = forwardWrite(request, backend, client, db)
			if err == nil {
				ensureIndexed(db, coll)
			}
		} else {
			err = forward(request, backend, client)
			if name == "drop" || name == "dropDatabase" {
				forgetDatabase(db)
			}
		}
		if err != nil {
			return
		}
	}
}

// forwardWrite forwards a write command under its database's lock, narrowing `{_id: X, ...}`
// filters to FerretDB's fast `{_id: X}` path when the other conditions can be checked here.
func forwardWrite(request []byte, backend, client net.Conn, db string) error {
	lock := writeLockOf(db)
	lock.Lock()
	defer lock.Unlock()
	rewritten, reply := pushdown(request, backend)
	if reply != nil {
		_, err := client.Write(reply)
		return err
	}
	if rewritten != nil {
		request = rewritten
	}
	return forward(request, backend, client)
}

// forward sends one request to the backend and relays its reply (or replies, for exhaust cursors).
func forward(request []byte, backend, client net.Conn) error {
	if _, err := backend.Write(request); err != nil {
		return err
	}
	if opCode(request) == opMsg && msgFlags(request)&flagMoreToCome != 0 {
		return nil // fire-and-forget request: no reply
	}
	for {
		reply, err := readMessage(backend)
		if err != nil {
			return err
		}
		if _, err := client.Write(reply); err != nil {
			return err
		}
		if opCode(reply) != opMsg || msgFlags(reply)&flagMoreToCome == 0 {
			return nil
		}
	}
}

// maxWriteBatch is the most statements one write command may carry here. FerretDB 1.24 stops
// answering, for good, an update command with 100 statements or more (measured: 99 took 63 ms, 100 never
// returned and the server answered nothing after it). Handshake replies advertise it as
// maxWriteBatchSize, so drivers split bulk writes below it by themselves.
const maxWriteBatch = 99

var maxWriteBatchKey = append([]byte{0x10}, []byte("maxWriteBatchSize\x00")...)

// isHandshake reports whether a request is a driver handshake or heartbeat (legacy OP_QUERY, hello,
// isMaster), whose reply advertises the server's limits.
func isHandshake(request []byte, name string) bool {
	return opCode(request) == opQuery || name == "hello" || name == "isMaster" || name == "ismaster"
}

// forwardHandshake relays a handshake and lowers maxWriteBatchSize in its reply to maxWriteBatch, in
// place (an int32 element keeps its size).
func forwardHandshake(request []byte, backend, client net.Conn) error {
	if _, err := backend.Write(request); err != nil {
		return err
	}
	reply, err := readMessage(backend)
	if err != nil {
		return err
	}
	if at := bytes.Index(reply, maxWriteBatchKey); at >= 0 && at+len(maxWriteBatchKey)+4 <= len(reply) {
		value := reply[at+len(maxWriteBatchKey) : at+len(maxWriteBatchKey)+4]
		if int32(binary.LittleEndian.Uint32(value)) > maxWriteBatch {
			binary.LittleEndian.PutUint32(value, maxWriteBatch)
		}
	}
	_, err = client.Write(reply)
	return err
}

func dialWithRetry(socket string, timeout time.Duration) (net.Conn, error) {
	deadline := time.Now().Add(timeout)
	for {
		conn, err := net.Dial("unix", socket)
		if err == nil || time.Now().After(deadline) {
			return conn, err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func readMessage(r io.Reader) ([]byte, error) {
	header := make([]byte, 16)
	if _, err := io.ReadFull(r, header); err != nil {
		return nil, err
	}
	length := int(binary.LittleEndian.Uint32(header[0:4]))
	if length < 16 || length > maxMessage {
		return nil, fmt.Errorf("bad message length %d", length)
	}
	msg := make([]byte, length)
	copy(msg, header)
	if _, err := io.ReadFull(r, msg[16:]); err != nil {
		return nil, err
	}
	return msg, nil
}

func opCode(msg []byte) int32 { return int32(binary.LittleEndian.Uint32(msg[12:16])) }

func msgFlags(msg []byte) uint32 {
	if len(msg) < 20 {
		return 0
	}
	return binary.LittleEndian.Uint32(msg[16:20])
}

// ensureIndexed adds FerretDB's missing _id lookup index after the first write to a collection.
func ensureIndexed(db, coll string) {
	if db == "" || coll == "" {
		return
	}
	key := db + "/" + coll
	seenMu.Lock()
	seen := seenColl[key]
	seenColl[key] = true
	seenMu.Unlock()
	if !seen {
		indexer.ensure(db)
	}
}

func forgetDatabase(db string) {
	seenMu.Lock()
	for key := range seenColl {
		if strings.HasPrefix(key, db+"/") {
			delete(seenColl, key)
		}
	}
	seenMu.Unlock()
	indexer.forget(db)
}

// commandInfo returns an OP_MSG's command name, the collection it names and its database.
func commandInfo(msg []byte) (name, coll, db string) {
	body, _, err := opMsgBody(msg)
	if err != nil {
		return "", "", ""
	}
	elements, err := body.Elements()
	if err != nil || len(elements) == 0 {
		return "", "", ""
	}
	name = elements[0].Key()
	coll, _ = elements[0].Value().StringValueOK()
	db, _ = body.Lookup("$db").StringValueOK()
	return name, coll, db
}

func commandName(msg []byte) (string, error) {
	// header(16) flags(4), then sections; find the kind-0 (body) section.
	pos := 20
	for pos < len(msg) {
		kind := msg[pos]
		pos++
		if pos+4 > len(msg) {
			break
		}
		size := int(binary.LittleEndian.Uint32(msg[pos : pos+4]))
		if kind == 0 {
			// BSON document: int32 size, then elements: type byte, cstring name, value...
			if pos+5 >= len(msg) {
				break
			}
			nameStart := pos + 5
			end := bytes.IndexByte(msg[nameStart:], 0)
			if end < 0 {
				break
			}
			return string(msg[nameStart : nameStart+end]), nil
		}
		pos += size // kind-1 section: int32 size covers the whole section after the kind byte
	}
	return "", errors.New("no body section")
}
