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
package main

import (
	"crypto/tls"
	"flag"
	"log"
	"net/http"
	"os"
	"time"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:9443", "listen address")
	root := flag.String("root", ".", "directory to serve")
	block := flag.String("block", "", "block device served at /block (ServeContent, as the reference exporter)")
	cert := flag.String("cert", "", "PEM certificate")
	key := flag.String("key", "", "PEM key")
	flag.Parse()

	mux := http.NewServeMux()
	mux.Handle("/files/", http.StripPrefix("/files/", http.FileServer(http.Dir(*root))))
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
