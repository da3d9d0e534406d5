// Command ginfull is the fair Gin peer in `cargo xtask bench server`: Gin
// doing the work gantry-server does on the same routes, so that the two
// compare like for like.
//
// Per request, in gantry-server's order: W3C trace context (a valid
// `traceparent` is continued, otherwise a trace is started; the response
// names this hop's span), `x-request-id` kept or set to the trace id, a JSON
// access-log line with gantry-server's fields written to standard output
// in batches,
// Prometheus metrics with gantry-server's names, labels and buckets, RFC
// 9457 problem bodies for every error, a 431 guard on header size, panic
// recovery, a 10 s deadline and a 1 MiB body limit. On /api: a bearer token
// compared in constant time, then a per-client token bucket. The user is
// read through database/sql from SQLite (same schema, WAL journal mode as gantry-server,
// a pool of 10, a prepared statement), its id validated as a UUID first.
//
// Not mirrored: gzip (the benchmark's load generator does not ask for it)
// and trace export (off in gantry-server's benchmark too).
package main

import (
	"context"
	"crypto/subtle"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/google/uuid"
	_ "github.com/mattn/go-sqlite3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/time/rate"
)

// The user the benchmark reads, seeded at start.
const benchUserID = "01890a5d-ac96-774b-bcce-b302099a8057"

const (
	requestTimeout = 10 * time.Second
	bodyLimit      = 1 << 20
	maxHeaderBytes = 16 * 1024
)

type user struct {
	ID        string `json:"id"`
	Name      string `json:"name"`
	Email     string `json:"email"`
	CreatedAt string `json:"createdAt"`
}

type problem struct {
	Type      string `json:"type"`
	Title     string `json:"title"`
	Status    int    `json:"status"`
	Code      int    `json:"code"`
	Message   string `json:"message"`
	Timestamp string `json:"timestamp"`
	TraceID   string `json:"traceId"`
}

var slugs = map[int]string{
	4000: "bad-request", 4001: "invalid-input", 4010: "unauthorized", 4040: "not-found",
	4041: "user-not-found", 4050: "method-not-allowed", 4130: "payload-too-large",
	4290: "rate-limited", 4310: "headers-too-large", 5000: "internal", 5030: "unavailable",
	5031: "timeout",
}

// abortWithProblem answers with the problem for a business code; the HTTP
// status is the code's first three digits, as in gantry-server.
func abortWithProblem(c *gin.Context, code int, message string) {
	status := code / 10
	traceID, _ := c.Get("traceID")
	id, _ := traceID.(string)
	body, _ := json.Marshal(problem{
		Type:      "https://gantry.dev/problems/" + slugs[code],
		Title:     http.StatusText(status),
		Status:    status,
		Code:      code,
		Message:   message,
		Timestamp: time.Now().UTC().Format(time.RFC3339Nano),
		TraceID:   id,
	})
	c.Data(status, "application/problem+json", body)
	c.Abort()
}

type metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	inFlight prometheus.Gauge
	registry *prometheus.Registry
}

// durationBuckets are gantry-server's latency bounds (server/src/metrics.rs):
// the E24 series from 100 µs to 10 s.
var durationBuckets = []float64{
	0.0001, 0.00011, 0.00012, 0.00013, 0.00015, 0.00016, 0.00018, 0.0002, 0.00022, 0.00024, 0.00027, 0.0003, 0.00033, 0.00036, 0.00039, 0.00043, 0.00047, 0.00051, 0.00056, 0.00062, 0.00068, 0.00075, 0.00082, 0.00091, 0.001, 0.0011, 0.0012, 0.0013, 0.0015, 0.0016, 0.0018, 0.002, 0.0022, 0.0024, 0.0027, 0.003, 0.0033, 0.0036, 0.0039, 0.0043, 0.0047, 0.0051, 0.0056, 0.0062, 0.0068, 0.0075, 0.0082, 0.0091, 0.01, 0.011, 0.012, 0.013, 0.015, 0.016, 0.018, 0.02, 0.022, 0.024, 0.027, 0.03, 0.033, 0.036, 0.039, 0.043, 0.047, 0.051, 0.056, 0.062, 0.068, 0.075, 0.082, 0.091, 0.1, 0.11, 0.12, 0.13, 0.15, 0.16, 0.18, 0.2, 0.22, 0.24, 0.27, 0.3, 0.33, 0.36, 0.39, 0.43, 0.47, 0.51, 0.56, 0.62, 0.68, 0.75, 0.82, 0.91, 1, 1.1, 1.2, 1.3, 1.5, 1.6, 1.8, 2, 2.2, 2.4, 2.7, 3, 3.3, 3.6, 3.9, 4.3, 4.7, 5.1, 5.6, 6.2, 6.8, 7.5, 8.2, 9.1, 10,
}

func newMetrics() *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "http_requests_total", Help: "HTTP requests served",
		}, []string{"method", "route", "status"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "http_request_duration_seconds", Help: "Time from request to response headers",
			Buckets: durationBuckets,
		}, []string{"method", "route"}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "http_requests_in_flight", Help: "Requests being served",
		}),
		registry: prometheus.NewRegistry(),
	}
	m.registry.MustRegister(m.requests, m.duration, m.inFlight)
	return m
}

func randomHex(bytes int) string {
	buf := make([]byte, bytes)
	for {
		for i := 0; i < bytes; i += 8 {
			v := rand.Uint64()
			for j := 0; j < 8 && i+j < bytes; j++ {
				buf[i+j] = byte(v >> (8 * j))
			}
		}
		for _, b := range buf {
			if b != 0 {
				return hex.EncodeToString(buf)
			}
		}
	}
}

func isLowerHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	zero := true
	for i := 0; i < len(s); i++ {
		ch := s[i]
		if !(ch >= '0' && ch <= '9' || ch >= 'a' && ch <= 'f') {
			return false
		}
		if ch != '0' {
			zero = false
		}
	}
	return !zero
}

// traceContext continues a valid traceparent or starts a trace, and names
// this hop's span in the response.
func traceContext(c *gin.Context) {
	traceID, sampled := "", true
	parts := strings.Split(c.GetHeader("traceparent"), "-")
	if len(parts) == 4 && parts[0] == "00" && isLowerHex(parts[1], 32) && isLowerHex(parts[2], 16) && len(parts[3]) == 2 {
		if flags, err := strconv.ParseUint(parts[3], 16, 8); err == nil {
			traceID, sampled = parts[1], flags&1 == 1
		}
	}
	if traceID == "" {
		traceID = randomHex(16)
	}
	flags := "00"
	if sampled {
		flags = "01"
	}
	c.Set("traceID", traceID)
	c.Header("traceparent", "00-"+traceID+"-"+randomHex(8)+"-"+flags)
	c.Next()
}

// requestID keeps the caller's x-request-id or sets it to the trace id.
func requestID(c *gin.Context) {
	id := c.GetHeader("x-request-id")
	if id == "" {
		id = c.GetString("traceID")
	}
	c.Set("requestID", id)
	c.Header("x-request-id", id)
	c.Next()
}

type span struct {
	Method    string `json:"method"`
	Route     string `json:"route"`
	TraceID   string `json:"trace_id"`
	RequestID string `json:"request_id"`
	Name      string `json:"name"`
}

type accessLine struct {
	Timestamp string  `json:"timestamp"`
	Level     string  `json:"level"`
	Message   string  `json:"message"`
	Status    int     `json:"status"`
	LatencyMs float64 `json:"latency_ms"`
	Error     string  `json:"error,omitempty"`
	Target    string  `json:"target"`
	Spans     []span  `json:"spans"`
}

// route is gantry-server's route label: the matched pattern written with
// braces, or "unmatched".
func route(c *gin.Context) string {
	pattern := c.FullPath()
	if pattern == "" {
		return "unmatched"
	}
	return strings.ReplaceAll(pattern, ":id", "{id}")
}

func methodLabel(method string) string {
	switch method {
	case "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS":
		return method
	}
	return "OTHER"
}

// batchedOutput collects log lines and writes them to standard output in
// batches, flushInterval after the first line of a batch, as gantry-server's
// log writer does: the request never waits for a write, and a busy server
// makes one write per batch instead of one per line. Past maxPending bytes
// waiting, the request that logs writes the batch itself.
type batchedOutput struct {
	mu      sync.Mutex
	pending []byte
	// Held while a batch is taken and written, so batches stay in order.
	output sync.Mutex
}

const (
	flushInterval = 10 * time.Millisecond
	maxPending    = 1 << 20
)

func (b *batchedOutput) writeLine(line []byte) {
	b.mu.Lock()
	first := len(b.pending) == 0
	b.pending = append(b.pending, line...)
	full := len(b.pending) > maxPending
	b.mu.Unlock()
	if full {
		b.flush()
	} else if first {
		time.AfterFunc(flushInterval, b.flush)
	}
}

func (b *batchedOutput) flush() {
	b.output.Lock()
	defer b.output.Unlock()
	b.mu.Lock()
	batch := b.pending
	b.pending = nil
	b.mu.Unlock()
	if len(batch) > 0 {
		os.Stdout.Write(batch)
	}
}

// accessLogAndMetrics writes one JSON line per response to standard output
// (in batches, as gantry-server does) and counts and times the request.
func accessLogAndMetrics(m *metrics, logs *batchedOutput) gin.HandlerFunc {
	return func(c *gin.Context) {
		start := time.Now()
		method, routeLabel := methodLabel(c.Request.Method), route(c)
		m.inFlight.Inc()
		defer m.inFlight.Dec()
		c.Next()
		elapsed := time.Since(start)
		status := c.Writer.Status()
		m.duration.WithLabelValues(method, routeLabel).Observe(elapsed.Seconds())
		m.requests.WithLabelValues(method, routeLabel, strconv.Itoa(status)).Inc()
		line := accessLine{
			Timestamp: time.Now().UTC().Format(time.RFC3339Nano),
			Level:     "INFO",
			Message:   "request finished",
			Status:    status,
			LatencyMs: float64(elapsed.Nanoseconds()) / 1e6,
			Target:    "ginfull",
			Spans: []span{{
				Method: c.Request.Method, Route: routeLabel, TraceID: c.GetString("traceID"),
				RequestID: c.GetString("requestID"), Name: "request",
			}},
		}
		if status >= 500 {
			line.Level, line.Message, line.Error = "ERROR", "request failed", c.Errors.String()
		}
		out, _ := json.Marshal(line)
		logs.writeLine(append(out, '\n'))
	}
}

func headerSizeGuard(c *gin.Context) {
	size := 0
	for name, values := range c.Request.Header {
		for _, v := range values {
			size += len(name) + len(v)
		}
	}
	if size > maxHeaderBytes {
		abortWithProblem(c, 4310, fmt.Sprintf("request headers exceed %d bytes", maxHeaderBytes))
		return
	}
	c.Next()
}

// deadlineAndBodyLimit gives the request gantry-server's timeout and body limit.
func deadlineAndBodyLimit(c *gin.Context) {
	ctx, cancel := context.WithTimeout(c.Request.Context(), requestTimeout)
	defer cancel()
	c.Request = c.Request.WithContext(ctx)
	c.Request.Body = http.MaxBytesReader(c.Writer, c.Request.Body, bodyLimit)
	c.Next()
}

func bearerAuth(tokens [][]byte) gin.HandlerFunc {
	return func(c *gin.Context) {
		header := c.GetHeader("Authorization")
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

type clientLimiter struct {
	mu       sync.Mutex
	limiters map[string]*rate.Limiter
	limit    rate.Limit
	burst    int
}

func (l *clientLimiter) middleware(c *gin.Context) {
	host, _, err := net.SplitHostPort(c.Request.RemoteAddr)
	if err != nil {
		host = c.Request.RemoteAddr
	}
	l.mu.Lock()
	limiter, ok := l.limiters[host]
	if !ok {
		limiter = rate.NewLimiter(l.limit, l.burst)
		l.limiters[host] = limiter
	}
	reservation := limiter.Reserve()
	l.mu.Unlock()
	if delay := reservation.Delay(); delay > 0 {
		reservation.Cancel()
		wait := int((delay + time.Second - 1) / time.Second)
		c.Header("Retry-After", strconv.Itoa(wait))
		abortWithProblem(c, 4290, fmt.Sprintf("too many requests; retry in %d s", wait))
		return
	}
	c.Next()
}

func envInt(name string, fallback int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return fallback
}

func openDatabase(path string) (*sql.DB, *sql.Stmt) {
	db, err := sql.Open("sqlite3", "file:"+path+"?_busy_timeout=5000&_journal_mode=WAL")
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

func main() {
	addr := os.Getenv("ADDR")
	if addr == "" {
		addr = "127.0.0.1:8080"
	}
	database := os.Getenv("DATABASE")
	if database == "" {
		database = "ginfull.db"
	}
	var tokens [][]byte
	for _, t := range strings.Split(os.Getenv("API_TOKENS"), ",") {
		if t = strings.TrimSpace(t); t != "" {
			tokens = append(tokens, []byte(t))
		}
	}
	db, getUser := openDatabase(database)
	m := newMetrics()
	logs := &batchedOutput{}
	limiter := &clientLimiter{
		limiters: map[string]*rate.Limiter{},
		limit:    rate.Limit(envInt("RATE_LIMIT_PER_SECOND", 50)),
		burst:    envInt("RATE_LIMIT_BURST", 100),
	}

	gin.SetMode(gin.ReleaseMode)
	r := gin.New()
	r.HandleMethodNotAllowed = true
	r.Use(traceContext, requestID, accessLogAndMetrics(m, logs), headerSizeGuard,
		gin.CustomRecovery(func(c *gin.Context, err any) {
			c.Error(fmt.Errorf("handler panicked: %v", err))
			abortWithProblem(c, 5000, "internal error; see the server log for this trace id")
		}),
		deadlineAndBodyLimit)
	r.NoRoute(func(c *gin.Context) { abortWithProblem(c, 4040, "no such route or file") })
	r.NoMethod(func(c *gin.Context) {
		abortWithProblem(c, 4050, "method not allowed on this route; see the Allow header")
	})

	r.GET("/", func(c *gin.Context) {
		c.JSON(http.StatusOK, gin.H{"message": "Hello from gin-full", "version": "0.1.0"})
	})
	r.GET("/healthz", func(c *gin.Context) { c.JSON(http.StatusOK, gin.H{"status": "ok"}) })
	r.GET("/readyz", func(c *gin.Context) {
		if err := db.PingContext(c.Request.Context()); err != nil {
			abortWithProblem(c, 5030, "the database does not answer")
			return
		}
		c.JSON(http.StatusOK, gin.H{"status": "ready"})
	})
	metricsHandler := promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{})
	r.GET("/metrics", gin.WrapH(metricsHandler))

	api := r.Group("/api", bearerAuth(tokens), limiter.middleware)
	api.GET("/v1/users/:id", func(c *gin.Context) {
		id, err := uuid.Parse(c.Param("id"))
		if err != nil {
			abortWithProblem(c, 4001, "id must be a UUID")
			return
		}
		var u user
		err = getUser.QueryRowContext(c.Request.Context(), id.String()).Scan(&u.ID, &u.Name, &u.Email, &u.CreatedAt)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			abortWithProblem(c, 4041, "no user with this id")
		case errors.Is(err, context.DeadlineExceeded):
			abortWithProblem(c, 5031, "request took longer than the server's timeout")
		case err != nil:
			c.Error(err)
			abortWithProblem(c, 5000, "internal error; see the server log for this trace id")
		default:
			c.JSON(http.StatusOK, u)
		}
	})

	log.Printf("listening on %s", addr)
	log.Fatal(r.Run(addr))
}
