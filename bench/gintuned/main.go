// Command gintuned is the tuned Gin peer in `cargo xtask bench server`:
// gantry-server's features, each stage written for speed the way an
// experienced Go engineer would write it, and built with profile-guided
// optimisation from a profile of the benchmark itself (default.pgo, made by
// `cargo xtask bench server --pgo`).
//
// Per request, in gantry-server's order: W3C trace context through
// OpenTelemetry's propagator and an SDK span (no exporter, as in the
// benchmark's gantry-server), `traceparent` (and `tracestate`) returned,
// `x-request-id` kept or set to the trace id; one JSON access-log line per
// response (status 499 for a request whose client went away), written in
// batches by a goroutine of its own; Prometheus metrics with gantry-server's
// names, labels and buckets; RFC 9457 problem bodies; a 431 guard on header
// size; panic recovery; a deadline; a body limit; gzip above 1 KiB when
// the client accepts it. On /api: a bearer token compared in constant time,
// then a per-client token bucket. The user is read from SQLite opened
// without SQLite's mutex and queried without a cancellable context, as
// gantry-server reads it. The server has a header-read timeout, a
// connection limit and a drain on SIGTERM.
//
// Where the speed comes from: one middleware for trace context, access log,
// metrics and deadline (no per-request map of context keys); metric handles
// curried once per route; the log line appended by hand into a pooled
// buffer, its timestamp's date and time of day formatted once a second;
// the log writer reusing its buffers; known header names read without
// canonicalisation; the row read as sql.RawBytes straight into the JSON.
package main

import (
	"context"
	"crypto/subtle"
	"database/sql"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unicode/utf8"
	"unsafe"

	"github.com/gin-gonic/gin"
	"github.com/google/uuid"
	"github.com/klauspost/compress/gzhttp"
	_ "github.com/mattn/go-sqlite3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/net/netutil"
)

// The user the benchmark reads, seeded at start.
const benchUserID = "01890a5d-ac96-774b-bcce-b302099a8057"

const maxHeaderBytes = 16 * 1024

type config struct {
	addr              string
	database          string
	tokens            [][]byte
	ratePerSecond     float64
	burst             float64
	requestTimeout    time.Duration
	headerReadTimeout time.Duration
	shutdownDelay     time.Duration
	shutdownGrace     time.Duration
	maxConnections    int
	bodyLimit         int64
}

func envOr(name, fallback string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return fallback
}

// loadConfig reads gantry-server's variables, with its defaults, and lists
// every problem at once.
func loadConfig() (config, error) {
	var problems []string
	number := func(name, fallback string) float64 {
		v, err := strconv.ParseFloat(envOr(name, fallback), 64)
		if err != nil || v <= 0 {
			problems = append(problems, name+" must be a positive number")
		}
		return v
	}
	duration := func(name, fallback string) time.Duration {
		v, err := time.ParseDuration(envOr(name, fallback))
		if err != nil || v < 0 {
			problems = append(problems, name+" must be a duration such as 10s")
		}
		return v
	}
	c := config{
		addr:              envOr("ADDR", "127.0.0.1:8080"),
		database:          envOr("DATABASE", "gintuned.db"),
		ratePerSecond:     number("RATE_LIMIT_PER_SECOND", "50"),
		burst:             number("RATE_LIMIT_BURST", "100"),
		requestTimeout:    duration("REQUEST_TIMEOUT", "10s"),
		headerReadTimeout: duration("HEADER_READ_TIMEOUT", "10s"),
		shutdownDelay:     duration("SHUTDOWN_DELAY", "5s"),
		shutdownGrace:     duration("SHUTDOWN_GRACE", "25s"),
		maxConnections:    int(number("MAX_CONNECTIONS", "512")),
		bodyLimit:         1 << 20,
	}
	for _, t := range strings.Split(os.Getenv("API_TOKENS"), ",") {
		if t = strings.TrimSpace(t); t != "" {
			c.tokens = append(c.tokens, []byte(t))
		}
	}
	if len(problems) > 0 {
		return c, errors.New("invalid configuration: " + strings.Join(problems, "; "))
	}
	return c, nil
}

// ---- JSON, appended by hand ----

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string. Bytes that are not valid UTF-8
// are written as U+FFFD, so the line stays valid JSON.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c < 0x80 {
			i++
			continue
		}
		if c >= 0x80 {
			r, size := utf8.DecodeRuneInString(s[i:])
			if r != utf8.RuneError || size != 1 {
				i += size
				continue
			}
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i++
			start = i
			continue
		}
		b = append(b, s[start:i]...)
		switch c {
		case '"', '\\':
			b = append(b, '\\', c)
		case '\n':
			b = append(b, '\\', 'n')
		case '\r':
			b = append(b, '\\', 'r')
		case '\t':
			b = append(b, '\\', 't')
		default:
			b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
		}
		i++
		start = i
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// stamp is the part of a timestamp that changes once a second.
type stamp struct {
	second int64
	prefix []byte // 2006-01-02T15:04:05.
}

var stampCache atomic.Pointer[stamp]

// appendTimestamp appends now in RFC 3339 with microseconds, formatting the
// date and time of day only when the second changes.
func appendTimestamp(b []byte, now time.Time) []byte {
	second := now.Unix()
	s := stampCache.Load()
	if s == nil || s.second != second {
		s = &stamp{second: second, prefix: now.UTC().AppendFormat(nil, "2006-01-02T15:04:05.")}
		stampCache.Store(s)
	}
	b = append(b, s.prefix...)
	us := now.Nanosecond() / 1000
	var digits [6]byte
	for i := 5; i >= 0; i-- {
		digits[i] = byte('0' + us%10)
		us /= 10
	}
	b = append(b, digits[:]...)
	return append(b, 'Z')
}

var buffers = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// ---- logs ----

// logOutput collects lines and writes them to standard output in batches,
// 10 ms after the first line of a batch, from a goroutine of its own, as
// gantry-server's log writer does; its two buffers are reused. Past 1 MiB
// waiting, the request that logs writes the batch itself.
type logOutput struct {
	mu      sync.Mutex
	pending []byte
	wake    chan struct{}
	// Held while a batch is written, so batches stay in order; spare is
	// the last batch's buffer, reused for the next.
	output sync.Mutex
	spare  []byte
}

const (
	flushInterval = 10 * time.Millisecond
	maxPending    = 1 << 20
)

func newLogOutput() *logOutput {
	l := &logOutput{wake: make(chan struct{}, 1), pending: make([]byte, 0, 64<<10), spare: make([]byte, 0, 64<<10)}
	go func() {
		for range l.wake {
			time.Sleep(flushInterval)
			l.flush()
		}
	}()
	return l
}

func (l *logOutput) write(line []byte) {
	l.mu.Lock()
	first := len(l.pending) == 0
	l.pending = append(l.pending, line...)
	full := len(l.pending) > maxPending
	l.mu.Unlock()
	if full {
		l.flush()
	} else if first {
		select {
		case l.wake <- struct{}{}:
		default:
		}
	}
}

func (l *logOutput) flush() {
	l.output.Lock()
	defer l.output.Unlock()
	l.mu.Lock()
	batch := l.pending
	l.pending = l.spare[:0]
	l.mu.Unlock()
	if len(batch) > 0 {
		os.Stdout.Write(batch)
	}
	l.spare = batch
}

// event writes a line outside a request (start, shutdown).
func (l *logOutput) event(level, message string) {
	b := append([]byte(`{"timestamp":"`), appendTimestamp(nil, time.Now())...)
	b = append(b, `","level":"`...)
	b = append(b, level...)
	b = append(b, `","message":`...)
	b = appendString(b, message)
	b = append(b, `,"target":"gintuned"}`+"\n"...)
	l.write(b)
}

// ---- metrics ----

// durationBuckets are gantry-server's latency bounds (server/src/metrics.rs):
// the E24 series from 100 µs to 10 s.
var durationBuckets = []float64{
	0.0001, 0.00011, 0.00012, 0.00013, 0.00015, 0.00016, 0.00018, 0.0002, 0.00022, 0.00024, 0.00027, 0.0003, 0.00033, 0.00036, 0.00039, 0.00043, 0.00047, 0.00051, 0.00056, 0.00062, 0.00068, 0.00075, 0.00082, 0.00091, 0.001, 0.0011, 0.0012, 0.0013, 0.0015, 0.0016, 0.0018, 0.002, 0.0022, 0.0024, 0.0027, 0.003, 0.0033, 0.0036, 0.0039, 0.0043, 0.0047, 0.0051, 0.0056, 0.0062, 0.0068, 0.0075, 0.0082, 0.0091, 0.01, 0.011, 0.012, 0.013, 0.015, 0.016, 0.018, 0.02, 0.022, 0.024, 0.027, 0.03, 0.033, 0.036, 0.039, 0.043, 0.047, 0.051, 0.056, 0.062, 0.068, 0.075, 0.082, 0.091, 0.1, 0.11, 0.12, 0.13, 0.15, 0.16, 0.18, 0.2, 0.22, 0.24, 0.27, 0.3, 0.33, 0.36, 0.39, 0.43, 0.47, 0.51, 0.56, 0.62, 0.68, 0.75, 0.82, 0.91, 1, 1.1, 1.2, 1.3, 1.5, 1.6, 1.8, 2, 2.2, 2.4, 2.7, 3, 3.3, 3.6, 3.9, 4.3, 4.7, 5.1, 5.6, 6.2, 6.8, 7.5, 8.2, 9.1, 10,
}

type metrics struct {
	requests  *prometheus.CounterVec
	duration  *prometheus.HistogramVec
	cancelled *prometheus.CounterVec
	inFlight  prometheus.Gauge
	registry  *prometheus.Registry
}

func newMetrics() *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "http_requests_total", Help: "HTTP responses, by method, route and status",
		}, []string{"method", "route", "status"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "http_request_duration_seconds", Help: "Time from request to response headers",
			Buckets: durationBuckets,
		}, []string{"method", "route"}),
		cancelled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "http_requests_cancelled_total", Help: "Requests dropped before their response was ready",
		}, []string{"method", "route"}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "http_requests_in_flight", Help: "Requests being served",
		}),
		registry: prometheus.NewRegistry(),
	}
	m.registry.MustRegister(m.requests, m.duration, m.cancelled, m.inFlight)
	return m
}

// route is what a request's matched pattern needs per request, made once:
// its label, its span's name and its curried metric handles for GET and
// 200, the common case.
type route struct {
	label    string
	spanName string
	getTime  prometheus.Observer
	getOK    prometheus.Counter
}

func (m *metrics) routes(patterns []string) map[string]*route {
	out := make(map[string]*route, len(patterns)+1)
	for _, pattern := range append(patterns, "") {
		label := strings.ReplaceAll(pattern, ":id", "{id}")
		name := "GET " + label
		if pattern == "" {
			label, name = "unmatched", "GET"
		}
		r := &route{label: label, spanName: name}
		if pattern != "" {
			// Not for unmatched, which never answers 200.
			r.getTime = m.duration.WithLabelValues("GET", label)
			r.getOK = m.requests.WithLabelValues("GET", label, "200")
		}
		out[pattern] = r
	}
	return out
}

func methodLabel(method string) string {
	switch method {
	case "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS":
		return method
	}
	return "OTHER"
}

// ---- trace context ----

// requestCarrier reads the two trace-context headers by their canonical
// names, so nothing is canonicalised or allocated per request.
type requestCarrier http.Header

func (c requestCarrier) Get(key string) string {
	var v []string
	switch key {
	case "traceparent":
		v = c["Traceparent"]
	case "tracestate":
		v = c["Tracestate"]
	}
	if len(v) == 0 {
		return ""
	}
	return v[0]
}

func (requestCarrier) Set(string, string) {}
func (requestCarrier) Keys() []string     { return nil }

// traceparent writes a span's context as the W3C header.
func traceparent(sc trace.SpanContext) string {
	var b [55]byte
	b[0], b[1], b[2] = '0', '0', '-'
	tid, sid := sc.TraceID(), sc.SpanID()
	for i, v := range tid {
		b[3+2*i], b[4+2*i] = hexDigits[v>>4], hexDigits[v&0xF]
	}
	b[35] = '-'
	for i, v := range sid {
		b[36+2*i], b[37+2*i] = hexDigits[v>>4], hexDigits[v&0xF]
	}
	b[52], b[53], b[54] = '-', '0', '0'
	if sc.IsSampled() {
		b[54] = '1'
	}
	return string(b[:])
}

// traceIDOf reads the trace id back from the response's traceparent, for
// problem bodies.
func traceIDOf(c *gin.Context) string {
	if v := c.Writer.Header()["Traceparent"]; len(v) == 1 && len(v[0]) == 55 {
		return v[0][3:35]
	}
	return ""
}

// ---- problems ----

var slugs = map[int]string{
	4000: "bad-request", 4001: "invalid-input", 4010: "unauthorized", 4040: "not-found",
	4041: "user-not-found", 4050: "method-not-allowed", 4130: "payload-too-large",
	4290: "rate-limited", 4310: "headers-too-large", 5000: "internal", 5030: "unavailable",
	5031: "timeout",
}

var (
	problemType = []string{"application/problem+json"}
	jsonType    = []string{"application/json"}
)

// abortWithProblem answers with the problem for a business code; the HTTP
// status is the code's first three digits, as in gantry-server.
func abortWithProblem(c *gin.Context, code int, message string) {
	status := code / 10
	bp := buffers.Get().(*[]byte)
	b := append((*bp)[:0], `{"type":"https://gantry.dev/problems/`...)
	b = append(b, slugs[code]...)
	b = append(b, `","title":`...)
	b = appendString(b, http.StatusText(status))
	b = append(b, `,"status":`...)
	b = strconv.AppendInt(b, int64(status), 10)
	b = append(b, `,"code":`...)
	b = strconv.AppendInt(b, int64(code), 10)
	b = append(b, `,"message":`...)
	b = appendString(b, message)
	b = append(b, `,"timestamp":"`...)
	b = appendTimestamp(b, time.Now())
	b = append(b, `","traceId":"`...)
	b = append(b, traceIDOf(c)...)
	b = append(b, `"}`...)
	c.Writer.Header()["Content-Type"] = problemType
	c.Writer.WriteHeader(status)
	c.Writer.Write(b)
	*bp = b
	buffers.Put(bp)
	c.Abort()
}

// ---- the edge: trace context, access log, metrics, deadline ----

type edge struct {
	tracer      trace.Tracer
	propagator  propagation.TraceContext
	spanOptions []trace.SpanStartOption
	metrics     *metrics
	routes      map[string]*route
	logs        *logOutput
	timeout     time.Duration
	bodyLimit   int64
}

func (e *edge) handle(c *gin.Context) {
	start := time.Now()
	req := c.Request
	r := e.routes[c.FullPath()]
	if r == nil {
		r = e.routes[""]
	}
	e.metrics.inFlight.Inc()

	clientCtx := req.Context()
	ctx := e.propagator.Extract(clientCtx, requestCarrier(req.Header))
	name := r.spanName
	if req.Method != "GET" {
		name = req.Method + " " + r.label
	}
	ctx, span := e.tracer.Start(ctx, name, e.spanOptions...)
	sc := span.SpanContext()
	tp := traceparent(sc)
	header := c.Writer.Header()
	header["Traceparent"] = []string{tp}
	if ts := sc.TraceState(); ts.Len() > 0 {
		header["Tracestate"] = []string{ts.String()}
	}
	// The caller's x-request-id, kept as sent, or the trace id.
	requestID := tp[3:35]
	if v := req.Header["X-Request-Id"]; len(v) > 0 {
		requestID = v[0]
	}
	header["X-Request-Id"] = []string{requestID}

	ctx, cancel := context.WithTimeout(ctx, e.timeout)
	c.Request = req.WithContext(ctx)
	if req.Body != nil && req.Body != http.NoBody {
		c.Request.Body = http.MaxBytesReader(c.Writer, req.Body, e.bodyLimit)
	}

	c.Next()

	cancel()
	elapsed := time.Since(start)
	span.End()
	e.metrics.inFlight.Dec()
	status := c.Writer.Status()
	gone := clientCtx.Err() != nil
	method := methodLabel(req.Method)
	switch {
	case gone:
		status = 499
		e.metrics.cancelled.WithLabelValues(method, r.label).Inc()
	case method == "GET" && status == http.StatusOK && r.getOK != nil:
		r.getTime.Observe(elapsed.Seconds())
		r.getOK.Inc()
	default:
		e.metrics.duration.WithLabelValues(method, r.label).Observe(elapsed.Seconds())
		e.metrics.requests.WithLabelValues(method, r.label, strconv.Itoa(status)).Inc()
	}

	e.accessLine(c, r, status, elapsed, gone, tp[3:35], requestID)
}

// accessLine writes the request's line: appended by hand into a pooled
// buffer and handed to the log goroutine.
func (e *edge) accessLine(c *gin.Context, r *route, status int, elapsed time.Duration, gone bool, traceID, requestID string) {
	bp := buffers.Get().(*[]byte)
	b := append((*bp)[:0], `{"timestamp":"`...)
	b = appendTimestamp(b, time.Now())
	switch {
	case gone:
		b = append(b, `","level":"INFO","message":"request cancelled"`...)
	case status >= 500:
		b = append(b, `","level":"ERROR","message":"request failed"`...)
	default:
		b = append(b, `","level":"INFO","message":"request finished"`...)
	}
	b = append(b, `,"status":`...)
	b = strconv.AppendInt(b, int64(status), 10)
	b = append(b, `,"latency_ms":`...)
	b = strconv.AppendFloat(b, float64(elapsed.Nanoseconds())/1e6, 'f', -1, 64)
	if status >= 500 && len(c.Errors) > 0 {
		b = append(b, `,"error":`...)
		b = appendString(b, c.Errors.String())
	}
	b = append(b, `,"target":"gintuned","spans":[{"method":`...)
	b = appendString(b, c.Request.Method)
	b = append(b, `,"route":`...)
	b = appendString(b, r.label)
	b = append(b, `,"trace_id":"`...)
	b = append(b, traceID...)
	b = append(b, `","request_id":`...)
	b = appendString(b, requestID)
	b = append(b, `,"name":"request"}]}`+"\n"...)
	e.logs.write(b)
	*bp = b
	buffers.Put(bp)
}

func headerSizeGuard(c *gin.Context) {
	size := 0
	for name, values := range c.Request.Header {
		for _, v := range values {
			size += len(name) + len(v)
		}
	}
	if size > maxHeaderBytes {
		abortWithProblem(c, 4310, "request headers exceed "+strconv.Itoa(maxHeaderBytes)+" bytes")
		return
	}
	c.Next()
}

// ---- /api: auth and rate limit ----

func bearerAuth(tokens [][]byte) gin.HandlerFunc {
	return func(c *gin.Context) {
		var header string
		if v := c.Request.Header["Authorization"]; len(v) > 0 {
			header = v[0]
		}
		scheme, token, found := strings.Cut(header, " ")
		presented := found && strings.EqualFold(scheme, "bearer")
		accepted := 0
		if presented {
			given := []byte(strings.TrimSpace(token))
			for _, t := range tokens {
				accepted |= subtle.ConstantTimeCompare(t, given)
			}
		}
		if accepted == 1 {
			c.Next()
			return
		}
		if presented {
			c.Header("WWW-Authenticate", `Bearer realm="gantry", error="invalid_token"`)
			abortWithProblem(c, 4010, "the bearer token is not valid")
		} else {
			c.Header("WWW-Authenticate", `Bearer realm="gantry"`)
			abortWithProblem(c, 4010, "this API needs an Authorization: Bearer <token> header")
		}
	}
}

// bucket is one client's tokens, refilled at the limiter's rate.
type bucket struct {
	tokens float64
	last   int64 // nanoseconds since the limiter's epoch
}

type limiterShard struct {
	mu      sync.Mutex
	buckets map[string]*bucket
}

// clientLimiter is one token bucket per client IP in 16 shards, each with
// its own lock. Its memory stays bounded without a pass over every client
// on each request: the count is looked at once every 1024 requests, and
// past 10 000 clients the buckets that have refilled are dropped; after a
// sweep that kept k buckets the next look is after max(1024, k) requests.
type clientLimiter struct {
	shards    [16]limiterShard
	rate      float64
	burst     float64
	epoch     time.Time
	requests  atomic.Int64
	nextCheck atomic.Int64
}

const (
	maxTrackedClients = 10_000
	checkEvery        = 1024
)

func newClientLimiter(rate, burst float64) *clientLimiter {
	l := &clientLimiter{rate: rate, burst: burst, epoch: time.Now()}
	for i := range l.shards {
		l.shards[i].buckets = map[string]*bucket{}
	}
	l.nextCheck.Store(checkEvery)
	return l
}

func shardOf(key string) int {
	h := uint32(2166136261)
	for i := 0; i < len(key); i++ {
		h ^= uint32(key[i])
		h *= 16777619
	}
	return int(h % 16)
}

// take takes a token for key; when there is none, how long until there is.
func (l *clientLimiter) take(key string) (bool, time.Duration) {
	now := int64(time.Since(l.epoch))
	s := &l.shards[shardOf(key)]
	s.mu.Lock()
	b := s.buckets[key]
	if b == nil {
		b = &bucket{tokens: l.burst, last: now}
		s.buckets[strings.Clone(key)] = b
	}
	b.tokens = min(l.burst, b.tokens+float64(now-b.last)/1e9*l.rate)
	b.last = now
	ok := b.tokens >= 1
	var wait time.Duration
	if ok {
		b.tokens--
	} else {
		wait = time.Duration((1 - b.tokens) / l.rate * 1e9)
	}
	s.mu.Unlock()
	if n := l.requests.Add(1); n >= l.nextCheck.Load() {
		l.sweep(n, now)
	}
	return ok, wait
}

func (l *clientLimiter) sweep(n, now int64) {
	total := 0
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		total += len(s.buckets)
		s.mu.Unlock()
	}
	kept := total
	if total > maxTrackedClients {
		kept = 0
		for i := range l.shards {
			s := &l.shards[i]
			s.mu.Lock()
			for key, b := range s.buckets {
				if b.tokens+float64(now-b.last)/1e9*l.rate >= l.burst {
					delete(s.buckets, key)
				}
			}
			kept += len(s.buckets)
			s.mu.Unlock()
		}
	}
	l.nextCheck.Store(n + int64(max(checkEvery, kept)))
}

func (l *clientLimiter) middleware(c *gin.Context) {
	host := c.Request.RemoteAddr
	if i := strings.LastIndexByte(host, ':'); i >= 0 {
		host = host[:i]
	}
	ok, wait := l.take(host)
	if !ok {
		seconds := int((wait + time.Second - 1) / time.Second)
		c.Header("Retry-After", strconv.Itoa(seconds))
		abortWithProblem(c, 4290, "too many requests; retry in "+strconv.Itoa(seconds)+" s")
		return
	}
	c.Next()
}

// ---- the database ----

// openDatabase opens SQLite as gantry-server does: WAL, a pool of 10,
// without SQLite's own mutex (each connection is used by one goroutine at
// a time); the read below is not cancellable, as gantry-server's is not.
func openDatabase(path string) (*sql.DB, *sql.Stmt) {
	db, err := sql.Open("sqlite3", "file:"+path+"?_busy_timeout=5000&_journal_mode=WAL&_mutex=no")
	if err != nil {
		log.Fatal(err)
	}
	db.SetMaxOpenConns(10)
	db.SetMaxIdleConns(10)
	for _, statement := range []string{
		`CREATE TABLE IF NOT EXISTS users (
			id         VARCHAR(36)  PRIMARY KEY,
			name       VARCHAR(100) NOT NULL,
			email      VARCHAR(254) NOT NULL UNIQUE,
			created_at VARCHAR(40)  NOT NULL)`,
		`INSERT OR IGNORE INTO users (id, name, email, created_at)
			VALUES ('` + benchUserID + `', 'Ada Lovelace', 'ada@example.com', '2025-01-01T00:00:00Z')`,
	} {
		if _, err := db.Exec(statement); err != nil {
			log.Fatal(err)
		}
	}
	get, err := db.Prepare("SELECT id, name, email, created_at FROM users WHERE id = ?")
	if err != nil {
		log.Fatal(err)
	}
	return db, get
}

// canonicalUUID says whether s is already a UUID's lowercase hyphenated form.
func canonicalUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < 36; i++ {
		switch {
		case i == 8 || i == 13 || i == 18 || i == 23:
			if s[i] != '-' {
				return false
			}
		case s[i] >= '0' && s[i] <= '9', s[i] >= 'a' && s[i] <= 'f':
		default:
			return false
		}
	}
	return true
}

func getUser(stmt *sql.Stmt) gin.HandlerFunc {
	return func(c *gin.Context) {
		id := c.Param("id")
		if !canonicalUUID(id) {
			parsed, err := uuid.Parse(id)
			if err != nil {
				abortWithProblem(c, 4001, "id must be a UUID")
				return
			}
			id = parsed.String()
		}
		rows, err := stmt.Query(id)
		if err != nil {
			c.Error(err)
			abortWithProblem(c, 5000, "internal error; see the server log for this trace id")
			return
		}
		defer rows.Close()
		if !rows.Next() {
			if err := rows.Err(); err != nil {
				c.Error(err)
				abortWithProblem(c, 5000, "internal error; see the server log for this trace id")
				return
			}
			abortWithProblem(c, 4041, "no user with this id")
			return
		}
		var uid, name, email, created sql.RawBytes
		if err := rows.Scan(&uid, &name, &email, &created); err != nil {
			c.Error(err)
			abortWithProblem(c, 5000, "internal error; see the server log for this trace id")
			return
		}
		bp := buffers.Get().(*[]byte)
		b := append((*bp)[:0], `{"id":`...)
		b = appendString(b, unsafeString(uid))
		b = append(b, `,"name":`...)
		b = appendString(b, unsafeString(name))
		b = append(b, `,"email":`...)
		b = appendString(b, unsafeString(email))
		b = append(b, `,"createdAt":`...)
		b = appendString(b, unsafeString(created))
		b = append(b, '}')
		writeJSON(c, b)
		*bp = b
		buffers.Put(bp)
	}
}

// unsafeString views a row's bytes as a string while the row is current.
func unsafeString(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }

func writeJSON(c *gin.Context, body []byte) {
	c.Writer.Header()["Content-Type"] = jsonType
	c.Writer.WriteHeader(http.StatusOK)
	c.Writer.Write(body)
}

func main() { os.Exit(run()) }

// run serves until SIGTERM or SIGINT; the process's exit status.
func run() int {
	cfg, err := loadConfig()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	if path := os.Getenv("CPU_PROFILE"); path != "" {
		f, err := os.Create(path)
		if err != nil {
			log.Fatal(err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			log.Fatal(err)
		}
		defer func() {
			pprof.StopCPUProfile()
			f.Close()
		}()
	}
	logs := newLogOutput()
	defer logs.flush()
	db, stmt := openDatabase(cfg.database)
	defer db.Close()
	m := newMetrics()
	provider := sdktrace.NewTracerProvider()
	patterns := []string{"/", "/healthz", "/readyz", "/metrics", "/api/v1/users/:id"}
	e := &edge{
		tracer:      provider.Tracer("gintuned"),
		spanOptions: []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindServer)},
		metrics:     m,
		routes:      m.routes(patterns),
		logs:        logs,
		timeout:     cfg.requestTimeout,
		bodyLimit:   cfg.bodyLimit,
	}
	var ready atomic.Bool

	gin.SetMode(gin.ReleaseMode)
	r := gin.New()
	r.HandleMethodNotAllowed = true
	r.Use(e.handle, headerSizeGuard, gin.CustomRecovery(func(c *gin.Context, err any) {
		c.Error(fmt.Errorf("handler panicked: %v", err))
		abortWithProblem(c, 5000, "internal error; see the server log for this trace id")
	}))
	r.NoRoute(func(c *gin.Context) { abortWithProblem(c, 4040, "no such route or file") })
	r.NoMethod(func(c *gin.Context) {
		abortWithProblem(c, 4050, "method not allowed on this route; see the Allow header")
	})
	r.GET("/", func(c *gin.Context) {
		bp := buffers.Get().(*[]byte)
		b := append((*bp)[:0], `{"message":`...)
		b = appendString(b, "Hello from gin-tuned")
		b = append(b, `,"version":`...)
		b = appendString(b, "0.1.0")
		b = append(b, '}')
		writeJSON(c, b)
		*bp = b
		buffers.Put(bp)
	})
	r.GET("/healthz", func(c *gin.Context) { writeJSON(c, []byte(`{"status":"ok"}`)) })
	r.GET("/readyz", func(c *gin.Context) {
		if !ready.Load() {
			abortWithProblem(c, 5030, "shutting down")
			return
		}
		writeJSON(c, []byte(`{"status":"ready"}`))
	})
	r.GET("/metrics", gin.WrapH(promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{})))
	limiter := newClientLimiter(cfg.ratePerSecond, cfg.burst)
	api := r.Group("/api", bearerAuth(cfg.tokens), limiter.middleware)
	api.GET("/v1/users/:id", getUser(stmt))

	// gzip above 1 KiB when the client accepts it, as gantry-server's
	// compression layer does (and gzhttp by default).
	compress, err := gzhttp.NewWrapper(gzhttp.MinSize(1024))
	if err != nil {
		log.Fatal(err)
	}
	server := &http.Server{
		Handler:           compress(r),
		ReadHeaderTimeout: cfg.headerReadTimeout,
		IdleTimeout:       90 * time.Second,
	}
	listener, err := net.Listen("tcp", cfg.addr)
	if err != nil {
		fmt.Fprintf(os.Stderr, "cannot listen on %s: %v\n", cfg.addr, err)
		return 1
	}
	served := make(chan error, 1)
	go func() { served <- server.Serve(netutil.LimitListener(listener, cfg.maxConnections)) }()
	ready.Store(true)
	logs.event("INFO", "listening on "+listener.Addr().String())

	stop, unstop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer unstop()
	select {
	case <-stop.Done():
	case err := <-served:
		logs.event("ERROR", "serving stopped: "+err.Error())
		return 1
	}
	// Drain: readiness off, still accepting for SHUTDOWN_DELAY, then
	// in-flight requests get SHUTDOWN_GRACE to finish.
	ready.Store(false)
	logs.event("INFO", "shutting down")
	time.Sleep(cfg.shutdownDelay)
	grace, cancel := context.WithTimeout(context.Background(), cfg.shutdownGrace)
	defer cancel()
	if err := server.Shutdown(grace); err != nil {
		// Closing the connections cancels the requests still running,
		// which log themselves as cancelled (499) as they end.
		server.Close()
		logs.event("ERROR", "shutdown grace exceeded: "+err.Error())
		return 1
	}
	logs.event("INFO", "stopped")
	return 0
}
