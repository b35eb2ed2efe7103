/*
Copyright 2026 Flant JSC

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
You may obtain a copy of the License at

    http://www.apache.org/licenses/LICENSE-2.0

Unless required by applicable law or agreed to in writing, software
distributed under the License is distributed on an "AS IS" BASIS,
WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
See the License for the specific language governing permissions and
limitations under the License.
*/

// Command goserver is the Go baseline for bench/exporter.sh: net/http's FileServer over TLS on
// HTTP/1.1 only (the same protocol the exporter offers), so the comparison is like for like.
//
// Besides FileServer (/files/, HTML listings) it serves the same tree under /d8/ the way the original
// Go exporter does (reference/perf-techniques.md §3): a directory path ending in "/" streams the JSON
// listing d8 reads, reading the directory 10 entries at a time and stat-ing each entry for its
// attributes; a file path is served with http.ServeContent.
package main

import (
	"bufio"
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"io/fs"
	"log"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

type attributes struct {
	Modtime     string `json:"modtime"`
	UID         uint32 `json:"uid"`
	GID         uint32 `json:"gid"`
	Permissions string `json:"permissions"`
	Size        *int64 `json:"size,omitempty"`
}

type listItem struct {
	Name       string     `json:"name"`
	Type       string     `json:"type"`
	URI        string     `json:"uri"`
	Attributes attributes `json:"attributes"`
}

func d8Handler(root string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		rel := path.Clean("/" + strings.TrimPrefix(r.URL.Path, "/d8/"))
		full := filepath.Join(root, filepath.FromSlash(rel))
		if !strings.HasSuffix(r.URL.Path, "/") {
			f, err := os.Open(full)
			if err != nil {
				http.Error(w, "not found", http.StatusNotFound)
				return
			}
			defer f.Close()
			fi, err := f.Stat()
			if err != nil || !fi.Mode().IsRegular() {
				http.Error(w, "not a file", http.StatusBadRequest)
				return
			}
			w.Header().Set("Content-Type", "application/octet-stream")
			http.ServeContent(w, r, "", fi.ModTime(), f)
			return
		}
		d, err := os.Open(full)
		if err != nil {
			http.Error(w, "not found", http.StatusNotFound)
			return
		}
		defer d.Close()
		w.Header().Set("Content-Type", "application/json")
		bw := bufio.NewWriterSize(w, 32*1024)
		bw.WriteString(`{"apiVersion":"v1","items":[`)
		enc := json.NewEncoder(bw)
		first := true
		for {
			entries, err := d.ReadDir(10)
			for _, e := range entries {
				info, ierr := e.Info() // lstat
				if ierr != nil {
					continue
				}
				it := listItem{Name: e.Name(), URI: url.PathEscape(e.Name())}
				st, _ := info.Sys().(*syscall.Stat_t)
				it.Attributes.Modtime = info.ModTime().UTC().Format(time.RFC3339)
				if st != nil {
					it.Attributes.UID, it.Attributes.GID = st.Uid, st.Gid
				}
				it.Attributes.Permissions = fmt.Sprintf("%04o", info.Mode().Perm())
				switch {
				case info.Mode().IsRegular():
					it.Type = "file"
					size := info.Size()
					it.Attributes.Size = &size
				case info.IsDir():
					it.Type, it.URI = "dir", it.URI+"/"
				case info.Mode()&fs.ModeSymlink != 0:
					it.Type = "link"
				default:
					it.Type = "other"
				}
				if !first {
					bw.WriteByte(',')
				}
				first = false
				enc.Encode(&it)
			}
			if err != nil {
				break
			}
		}
		bw.WriteString("]}\n")
		bw.Flush()
	}
}

func main() {
	addr := flag.String("addr", "127.0.0.1:9443", "listen address")
	root := flag.String("root", ".", "directory to serve")
	block := flag.String("block", "", "block device served at /block (ServeContent, as the reference exporter)")
	cert := flag.String("cert", "", "PEM certificate")
	key := flag.String("key", "", "PEM key")
	flag.Parse()

	mux := http.NewServeMux()
	mux.Handle("/files/", http.StripPrefix("/files/", http.FileServer(http.Dir(*root))))
	mux.HandleFunc("/d8/", d8Handler(*root))
	if *block != "" {
		mux.HandleFunc("/block", func(w http.ResponseWriter, r *http.Request) {
			f, err := os.Open(*block)
			if err != nil {
				http.Error(w, "open failed", http.StatusInternalServerError)
				return
			}
			defer f.Close()
			w.Header().Set("Content-Type", "application/octet-stream")
			http.ServeContent(w, r, "", time.Time{}, f)
		})
	}
	srv := &http.Server{
		Addr:              *addr,
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       30 * time.Second,
		// A non-nil empty map disables HTTP/2.
		TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){},
		TLSConfig:    &tls.Config{MinVersion: tls.VersionTLS12},
	}
	log.Printf("listening on %s", *addr)
	log.Fatal(srv.ListenAndServeTLS(*cert, *key))
}
