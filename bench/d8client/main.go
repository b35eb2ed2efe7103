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

// Command d8client is the benchmark client of bench/exporter.sh. It downloads the way `d8 data export
// download` does (reference/d8-contract.md §7.2: GET a directory listing, recurse into "dir" items, GET
// every "file" item with its own request) over a fixed number of keep-alive HTTP/1.1 connections, and
// prints what it fetched and its own CPU time, so the bench can show that the client is not the limit.
//
//	d8client -mode tree  -url https://host/api/v1/files/tree/ -format d8|nginx -conns 4 [-token-file f]
//	d8client -mode files -url https://host/api/v1/files/small/ -names names.txt -conns 1 [-token-file f]
//	d8client -mode flood -url https://host/api/v1/files/f -n 1000 -conns 16 [-token-file f]
//	    (the same token n times, or without -token-file a fresh random bearer token per request)
//
// Output: one line of key=value pairs (requests, bytes, seconds, cpu_user, cpu_sys, status counts).
package main

import (
	"bufio"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

type item struct {
	Name string `json:"name"`
	Type string `json:"type"`
}

// Listings: the exporter's (and the Go reference's) {"apiVersion":"v1","items":[…]} with types
// file|dir|link|other, or nginx's JSON autoindex [{"name","type":"file"|"directory"}…].
func parseListing(format string, body io.Reader) ([]item, error) {
	dec := json.NewDecoder(body)
	switch format {
	case "nginx":
		var items []item
		if err := dec.Decode(&items); err != nil {
			return nil, err
		}
		for i := range items {
			if items[i].Type == "directory" {
				items[i].Type = "dir"
			}
		}
		return items, nil
	default:
		var doc struct {
			Items []item `json:"items"`
		}
		if err := dec.Decode(&doc); err != nil {
			return nil, err
		}
		return doc.Items, nil
	}
}

type stats struct {
	requests, bytes, files, dirs atomic.Int64
	mu                           sync.Mutex
	codes                        map[int]int
}

func (s *stats) code(c int) {
	s.mu.Lock()
	s.codes[c]++
	s.mu.Unlock()
}

type client struct {
	http   *http.Client
	bearer string
	st     *stats
}

func (c *client) get(u string, bearer string) (*http.Response, error) {
	req, err := http.NewRequest("GET", u, nil)
	if err != nil {
		return nil, err
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	c.st.requests.Add(1)
	c.st.code(resp.StatusCode)
	return resp, nil
}

// fetch reads a body to the end (so the connection is reused) and counts its bytes.
func (c *client) fetch(u string) error {
	resp, err := c.get(u, c.bearer)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	n, err := io.Copy(io.Discard, resp.Body)
	c.st.bytes.Add(n)
	if resp.StatusCode != 200 {
		return fmt.Errorf("GET %s: %d", u, resp.StatusCode)
	}
	return err
}

// A work queue: listings add their children; `conns` workers drain it.
type queue struct {
	mu      sync.Mutex
	cond    *sync.Cond
	tasks   []string
	pending int
}

func (q *queue) push(u string) {
	q.mu.Lock()
	q.tasks = append(q.tasks, u)
	q.pending++
	q.mu.Unlock()
	q.cond.Signal()
}

func (q *queue) pop() (string, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for len(q.tasks) == 0 {
		if q.pending == 0 {
			return "", false
		}
		q.cond.Wait()
	}
	n := len(q.tasks) - 1
	u := q.tasks[n]
	q.tasks = q.tasks[:n]
	return u, true
}

func (q *queue) done() {
	q.mu.Lock()
	q.pending--
	if q.pending == 0 {
		q.cond.Broadcast()
	}
	q.mu.Unlock()
}

func (c *client) tree(root, format string, conns int) error {
	q := &queue{}
	q.cond = sync.NewCond(&q.mu)
	q.push(root)
	return workers(conns, q.pop, func(u string) error {
		defer q.done()
		return c.visit(q, u, format)
	})
}

func (c *client) visit(q *queue, u, format string) error {
	if !strings.HasSuffix(u, "/") {
		c.st.files.Add(1)
		return c.fetch(u)
	}
	c.st.dirs.Add(1)
	resp, err := c.get(u, c.bearer)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		io.Copy(io.Discard, resp.Body)
		return fmt.Errorf("GET %s: %d", u, resp.StatusCode)
	}
	items, err := parseListing(format, resp.Body)
	io.Copy(io.Discard, resp.Body)
	if err != nil {
		return fmt.Errorf("listing %s: %v", u, err)
	}
	for _, it := range items {
		switch it.Type {
		case "dir":
			q.push(u + url.PathEscape(it.Name) + "/")
		case "file", "link":
			q.push(u + url.PathEscape(it.Name))
		}
	}
	return nil
}

func randomToken() string {
	b := make([]byte, 32)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func main() {
	mode := flag.String("mode", "tree", "tree | files | flood")
	base := flag.String("url", "", "listing URL (tree), directory URL (files) or file URL (flood)")
	format := flag.String("format", "d8", "listing format: d8 | nginx")
	conns := flag.Int("conns", 4, "parallel keep-alive connections")
	names := flag.String("names", "", "files mode: file with one name per line, fetched in order")
	n := flag.Int("n", 1000, "flood mode: requests")
	caFile := flag.String("cacert", "", "PEM CA to trust")
	tokenFile := flag.String("token-file", "", "bearer token to send")
	flag.Parse()

	pool := x509.NewCertPool()
	if *caFile != "" {
		pem, err := os.ReadFile(*caFile)
		if err != nil || !pool.AppendCertsFromPEM(pem) {
			fmt.Fprintf(os.Stderr, "cannot load %s: %v\n", *caFile, err)
			os.Exit(2)
		}
	}
	tr := &http.Transport{
		TLSClientConfig:     &tls.Config{RootCAs: pool},
		MaxConnsPerHost:     *conns,
		MaxIdleConnsPerHost: *conns,
		DisableCompression:  true,
		ForceAttemptHTTP2:   false,
		// A non-nil empty map keeps the client on HTTP/1.1, as the servers under test.
		TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{},
	}
	st := &stats{codes: map[int]int{}}
	c := &client{http: &http.Client{Transport: tr}, st: st}
	if *tokenFile != "" {
		t, err := os.ReadFile(*tokenFile)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		c.bearer = strings.TrimSpace(string(t))
	}

	start := time.Now()
	var err error
	switch *mode {
	case "tree":
		err = c.tree(*base, *format, *conns)
	case "files":
		var list []string
		f, ferr := os.Open(*names)
		if ferr != nil {
			fmt.Fprintln(os.Stderr, ferr)
			os.Exit(2)
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if s := strings.TrimSpace(sc.Text()); s != "" {
				list = append(list, *base+url.PathEscape(s))
			}
		}
		f.Close()
		err = each(list, *conns, func(u string) error { st.files.Add(1); return c.fetch(u) })
	case "flood":
		list := make([]string, *n)
		for i := range list {
			list[i] = *base
		}
		err = each(list, *conns, func(u string) error {
			bearer := c.bearer
			if bearer == "" {
				bearer = randomToken()
			}
			resp, err := c.get(u, bearer)
			if err != nil {
				return err
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			return nil
		})
	default:
		err = fmt.Errorf("unknown mode %q", *mode)
	}
	elapsed := time.Since(start)
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	tv := func(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }
	var codes []string
	for k, v := range st.codes {
		codes = append(codes, fmt.Sprintf("%d:%d", k, v))
	}
	sort.Strings(codes)
	fmt.Printf("requests=%d files=%d dirs=%d bytes=%d seconds=%.4f cpu_user=%.4f cpu_sys=%.4f codes=%s\n",
		st.requests.Load(), st.files.Load(), st.dirs.Load(), st.bytes.Load(), elapsed.Seconds(),
		tv(ru.Utime), tv(ru.Stime), strings.Join(codes, ","))
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

// each runs f over list with `conns` workers taking items in order.
func each(list []string, conns int, f func(string) error) error {
	var next atomic.Int64
	return workers(conns, func() (string, bool) {
		i := int(next.Add(1)) - 1
		if i >= len(list) {
			return "", false
		}
		return list[i], true
	}, f)
}

// workers runs f on what take hands out, with `conns` goroutines, until take says there is no more;
// the first error is returned, after all of them have stopped.
func workers(conns int, take func() (string, bool), f func(string) error) error {
	var firstErr atomic.Value
	var wg sync.WaitGroup
	for i := 0; i < conns; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				item, ok := take()
				if !ok {
					return
				}
				if err := f(item); err != nil {
					firstErr.CompareAndSwap(nil, err)
				}
			}
		}()
	}
	wg.Wait()
	if e, ok := firstErr.Load().(error); ok {
		return e
	}
	return nil
}
