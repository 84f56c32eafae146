package main

// An index FerretDB 1.x needs but does not create.
//
// FerretDB's SQLite backend looks documents up by `_ferretdb_sjson->'$._id'`, but the unique `_id`
// index it creates is on `_ferretdb_sjson->"_id"`, a different expression, so SQLite never uses it:
// every find, update or delete by _id scans the table (measured: an _id update cost 0.8 ms at 10
// documents and 4.9 ms at 2,000). This file adds an index on the exact expression FerretDB queries, once
// per collection, through FerretDB's own SQLite files. FerretDB keeps its index list in its metadata
// table, so it neither sees nor minds the extra index; DROP TABLE removes it with the collection.

import (
	"database/sql"
	"fmt"
	"log"
	"path/filepath"
	"sync"

	_ "modernc.org/sqlite" // the SQLite driver FerretDB itself uses
)

type idIndexer struct {
	dataDir string
	mu      sync.Mutex
	dbs     map[string]*sql.DB
	done    map[string]bool // "<db>/<table>" already indexed
}

func newIDIndexer(dataDir string) *idIndexer {
	return &idIndexer{dataDir: dataDir, dbs: map[string]*sql.DB{}, done: map[string]bool{}}
}

// ensure indexes every collection table of database `db` that is not indexed yet.
func (x *idIndexer) ensure(db string) {
	if db == "" || db == "admin" || filepath.Base(db) != db {
		return
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	conn, ok := x.dbs[db]
	if !ok {
		path := filepath.Join(x.dataDir, db+".sqlite")
		var err error
		conn, err = sql.Open("sqlite", "file:"+path+"?mode=rw&_pragma=busy_timeout(10000)")
		if err != nil {
			return
		}
		conn.SetMaxOpenConns(1)
		x.dbs[db] = conn
	}
	rows, err := conn.Query(`SELECT table_name FROM _ferretdb_collections`)
	if err != nil {
		return // the database file does not exist yet
	}
	var tables []string
	for rows.Next() {
		var table string
		if rows.Scan(&table) == nil {
			tables = append(tables, table)
		}
	}
	_ = rows.Close()
	for _, table := range tables {
		key := db + "/" + table
		if x.done[key] {
			continue
		}
		q := fmt.Sprintf(`CREATE INDEX IF NOT EXISTS %q ON %q (_ferretdb_sjson->'$._id')`, table+"_aftersales_id", table)
		if _, err := conn.Exec(q); err != nil {
			log.Printf("cannot add the _id lookup index to %s: %v", key, err)
			continue
		}
		x.done[key] = true
	}
}

// forget drops what is known about a database (it was dropped or recreated).
func (x *idIndexer) forget(db string) {
	x.mu.Lock()
	defer x.mu.Unlock()
	for key := range x.done {
		if len(key) > len(db) && key[:len(db)+1] == db+"/" {
			delete(x.done, key)
		}
	}
	if conn, ok := x.dbs[db]; ok {
		_ = conn.Close()
		delete(x.dbs, db)
	}
}
