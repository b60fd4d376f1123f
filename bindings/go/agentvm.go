// Package agentvm is the Go binding of agentvm: a cgo package over its C ABI
// (bindings/c/include/agentvm.h, libagentvm). Commands, answers and events are JSON, as on
// the WebSocket; every blocking call takes a context.Context.
//
// Build: point cgo at the library, e.g.
//
//	CGO_LDFLAGS="-L/path/to/target/debug -Wl,-rpath,/path/to/target/debug" go test ./...
//
// Every method may be called from any goroutine.
package agentvm

/*
#cgo CFLAGS: -I${SRCDIR}/../c/include
#cgo LDFLAGS: -lagentvm
#include <stdlib.h>
#include <string.h>
#include "agentvm.h"

// The last error is per OS thread; a goroutine may change threads between two cgo calls, so
// each call and the read of its message happen in one C function (one cgo call).
static char *avm_err(AgentvmResult rc) {
	if (rc == AGENTVM_RESULT_OK || rc == AGENTVM_RESULT_NO_EVENTS || rc == AGENTVM_RESULT_ENDED) return NULL;
	const char *m = agentvm_last_error();
	return m ? strdup(m) : NULL;
}
static AgentvmResult avm_open(const char *o, int64_t t, uint64_t id, AgentvmRuntime **out, char **err) {
	AgentvmResult rc = agentvm_open(o, t, id, out); *err = avm_err(rc); return rc;
}
static AgentvmResult avm_connect(const char *o, int64_t t, uint64_t id, AgentvmRuntime **out, char **err) {
	AgentvmResult rc = agentvm_connect(o, t, id, out); *err = avm_err(rc); return rc;
}
static AgentvmResult avm_request(AgentvmRuntime *rt, const char *j, int64_t t, uint64_t id, char **out, char **err) {
	AgentvmResult rc = agentvm_request(rt, j, t, id, out); *err = avm_err(rc); return rc;
}
static AgentvmResult avm_serve(AgentvmRuntime *rt, const char *o, char **out, char **err) {
	AgentvmResult rc = agentvm_serve(rt, o, out); *err = avm_err(rc); return rc;
}
static AgentvmResult avm_close(AgentvmRuntime *rt, char **err) {
	AgentvmResult rc = agentvm_close(rt); *err = avm_err(rc); return rc;
}
static AgentvmResult avm_subscribe(AgentvmRuntime *rt, const char *o, AgentvmSubscription **out, char **err) {
	AgentvmResult rc = agentvm_subscribe(rt, o, out); *err = avm_err(rc); return rc;
}
static AgentvmResult avm_next(AgentvmSubscription *s, int64_t t, size_t max, char **out, char **err) {
	AgentvmResult rc = agentvm_subscription_next(s, t, max, out); *err = avm_err(rc); return rc;
}
*/
import "C"

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"
)

// Code is a result code of the C ABI; the codes 1–10 and 16 are agentvm's stable error kinds.
type Code int

// The error kinds, as result codes.
const (
	NotFound      Code = C.AGENTVM_RESULT_NOT_FOUND
	AlreadyExists Code = C.AGENTVM_RESULT_ALREADY_EXISTS
	InvalidInput  Code = C.AGENTVM_RESULT_INVALID_INPUT
	Conflict      Code = C.AGENTVM_RESULT_CONFLICT
	Unavailable   Code = C.AGENTVM_RESULT_UNAVAILABLE
	Storage       Code = C.AGENTVM_RESULT_STORAGE
	StorageFull   Code = C.AGENTVM_RESULT_STORAGE_FULL
	Protocol      Code = C.AGENTVM_RESULT_PROTOCOL
	Cancelled     Code = C.AGENTVM_RESULT_CANCELLED
	Unauthorized  Code = C.AGENTVM_RESULT_UNAUTHORIZED
	Internal      Code = C.AGENTVM_RESULT_INTERNAL
	NullArgument  Code = C.AGENTVM_RESULT_NULL_ARGUMENT
	InvalidUTF8   Code = C.AGENTVM_RESULT_INVALID_UTF8
	Panic         Code = C.AGENTVM_RESULT_PANIC
)

// Error is a failed agentvm call: its code (the error kind) and its message with causes.
type Error struct {
	Code    Code
	Message string
}

func (e *Error) Error() string { return fmt.Sprintf("agentvm (code %d): %s", int(e.Code), e.Message) }

// ErrEnded is returned by Subscription.Next once the subscription has ended.
var ErrEnded = errors.New("agentvm: subscription ended")

func failure(rc C.AgentvmResult, msg *C.char) error {
	text := "(no message)"
	if msg != nil {
		text = C.GoString(msg)
		C.free(unsafe.Pointer(msg))
	}
	return &Error{Code: Code(rc), Message: text}
}

// take copies and frees a string agentvm returned.
func take(s *C.char) string {
	out := C.GoString(s)
	C.agentvm_string_free(s)
	return out
}

// Runtime is a local (Open) or remote (Connect) agentvm runtime.
type Runtime struct {
	// Held for reading by every call, for writing by Close (which frees the handle).
	mu     sync.RWMutex
	rt     *C.AgentvmRuntime
	nextID uint64
}

// openingID names open and connect calls for agentvm_cancel(NULL, id); process-wide, in a
// range of its own.
var openingID uint64 = 1 << 62

func wrap(ctx context.Context, open func(*C.char, C.int64_t, C.uint64_t, **C.AgentvmRuntime, **C.char) C.AgentvmResult, options string) (*Runtime, error) {
	if err := ctx.Err(); err != nil {
		return nil, &Error{Code: Cancelled, Message: err.Error()}
	}
	copts := C.CString(options)
	defer C.free(unsafe.Pointer(copts))
	id := atomic.AddUint64(&openingID, 1)
	stop := watchCancel(ctx, id, func(id uint64) bool {
		return C.agentvm_cancel(nil, C.uint64_t(id)) == C.AGENTVM_RESULT_OK
	})
	defer stop()
	var rt *C.AgentvmRuntime
	var msg *C.char
	if rc := open(copts, C.int64_t(deadlineMs(ctx)), C.uint64_t(id), &rt, &msg); rc != C.AGENTVM_RESULT_OK {
		return nil, failure(rc, msg)
	}
	return &Runtime{rt: rt}, nil
}

// deadlineMs is the context's deadline as a C timeout: -1 for none.
func deadlineMs(ctx context.Context) int64 {
	deadline, ok := ctx.Deadline()
	if !ok {
		return -1
	}
	if ms := time.Until(deadline).Milliseconds(); ms > 0 {
		return ms
	}
	return 0
}

// watchCancel cancels the call named id (through cancel) when ctx ends before it does; the
// returned stop ends the watch and waits for it, so it must run before the handle may go.
func watchCancel(ctx context.Context, id uint64, cancel func(uint64) bool) (stop func()) {
	if ctx.Done() == nil {
		return func() {}
	}
	done := make(chan struct{})
	var watcher sync.WaitGroup
	watcher.Add(1)
	go func() {
		defer watcher.Done()
		select {
		case <-done:
			return
		case <-ctx.Done():
		}
		// The call may not have registered its id yet: retry until it ends.
		for {
			if cancel(id) {
				return
			}
			select {
			case <-done:
				return
			case <-time.After(2 * time.Millisecond):
			}
		}
	}()
	return func() {
		close(done)
		watcher.Wait()
	}
}

// Open opens a local runtime: optionsJSON as agentvm_open takes it
// (`{"llm": "mock", "dataDir": "/tmp/x"}`; "" for the defaults).
func Open(optionsJSON string) (*Runtime, error) {
	return OpenContext(context.Background(), optionsJSON)
}

// OpenContext is Open bounded by the context's deadline and cancelled with it.
func OpenContext(ctx context.Context, optionsJSON string) (*Runtime, error) {
	return wrap(ctx, func(o *C.char, t C.int64_t, id C.uint64_t, out **C.AgentvmRuntime, msg **C.char) C.AgentvmResult {
		return C.avm_open(o, t, id, out, msg)
	}, optionsJSON)
}

// Connect connects to an agentvm server: `{"url": "ws://host:port/ws", "token": "..."}`, or to
// the servers of a cluster with `"urls": [...]` instead of `"url"` (failover).
func Connect(optionsJSON string) (*Runtime, error) {
	return ConnectContext(context.Background(), optionsJSON)
}

// ConnectContext is Connect bounded by the context's deadline and cancelled with it: a server
// that does not answer can be given up on.
func ConnectContext(ctx context.Context, optionsJSON string) (*Runtime, error) {
	return wrap(ctx, func(o *C.char, t C.int64_t, id C.uint64_t, out **C.AgentvmRuntime, msg **C.char) C.AgentvmResult {
		return C.avm_connect(o, t, id, out, msg)
	}, optionsJSON)
}

var errClosed = &Error{Code: Cancelled, Message: "the runtime handle was closed"}

// Request runs one command (`{"type": "image_get_request", "data": {...}}`) and returns the
// response's data as JSON. The context's deadline bounds it and cancelling the context
// cancels it (an *Error with Code Cancelled); what the command already did stays done.
func (r *Runtime) Request(ctx context.Context, requestJSON string) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", &Error{Code: Cancelled, Message: err.Error()}
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.rt == nil {
		return "", errClosed
	}
	id := atomic.AddUint64(&r.nextID, 1)
	// The watcher uses the handle: it must have stopped before the read lock is released.
	stop := watchCancel(ctx, id, func(id uint64) bool {
		return C.agentvm_cancel(r.rt, C.uint64_t(id)) == C.AGENTVM_RESULT_OK
	})
	defer stop()
	creq := C.CString(requestJSON)
	defer C.free(unsafe.Pointer(creq))
	var out, msg *C.char
	if rc := C.avm_request(r.rt, creq, C.int64_t(deadlineMs(ctx)), C.uint64_t(id), &out, &msg); rc != C.AGENTVM_RESULT_OK {
		return "", failure(rc, msg)
	}
	return take(out), nil
}

// Serve serves this local runtime (`{"addr": "127.0.0.1:0"}`); returns `{"url", "wsUrl", "port"}`.
func (r *Runtime) Serve(optionsJSON string) (string, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.rt == nil {
		return "", errClosed
	}
	copts := C.CString(optionsJSON)
	defer C.free(unsafe.Pointer(copts))
	var out, msg *C.char
	if rc := C.avm_serve(r.rt, copts, &out, &msg); rc != C.AGENTVM_RESULT_OK {
		return "", failure(rc, msg)
	}
	return take(out), nil
}

// Close ends every subscription and running call (they return Cancelled / ErrEnded), stops
// the runtime and frees it. Idempotent.
func (r *Runtime) Close() error {
	r.mu.RLock()
	rt := r.rt
	var err error
	if rt != nil {
		var msg *C.char
		if rc := C.avm_close(rt, &msg); rc != C.AGENTVM_RESULT_OK {
			err = failure(rc, msg)
		}
	}
	r.mu.RUnlock()
	// Running calls ended with the close above; wait for them, then free.
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.rt != nil {
		C.agentvm_runtime_free(r.rt)
		r.rt = nil
	}
	return err
}

// Subscription is a stream of events (JSON arrays of wire events, each with `cursor`).
type Subscription struct {
	mu  sync.RWMutex
	sub *C.AgentvmSubscription
}

// Subscribe subscribes to events: `{"sessions": [{"sessionId": "..."}], "global": false}`.
func (r *Runtime) Subscribe(optionsJSON string) (*Subscription, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.rt == nil {
		return nil, errClosed
	}
	copts := C.CString(optionsJSON)
	defer C.free(unsafe.Pointer(copts))
	var sub *C.AgentvmSubscription
	var msg *C.char
	if rc := C.avm_subscribe(r.rt, copts, &sub, &msg); rc != C.AGENTVM_RESULT_OK {
		return nil, failure(rc, msg)
	}
	return &Subscription{sub: sub}, nil
}

// How long one blocking wait lasts before the context is checked again.
const pollSlice = 50 * time.Millisecond

// Next returns the next batch of at most max events (0: all waiting) as a JSON array,
// waiting until one arrives, the context ends (its error) or the subscription ends (ErrEnded).
func (s *Subscription) Next(ctx context.Context, max int) (string, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.sub == nil {
		return "", ErrEnded
	}
	for {
		if err := ctx.Err(); err != nil {
			return "", err
		}
		wait := pollSlice
		if deadline, ok := ctx.Deadline(); ok && time.Until(deadline) < wait {
			wait = time.Until(deadline)
			if wait < 0 {
				wait = 0
			}
		}
		var out, msg *C.char
		rc := C.avm_next(s.sub, C.int64_t(wait.Milliseconds()), C.size_t(max), &out, &msg)
		switch rc {
		case C.AGENTVM_RESULT_OK:
			return take(out), nil
		case C.AGENTVM_RESULT_NO_EVENTS:
			continue
		case C.AGENTVM_RESULT_ENDED:
			return "", ErrEnded
		default:
			return "", failure(rc, msg)
		}
	}
}

// Close ends the subscription and frees it. Idempotent.
func (s *Subscription) Close() {
	s.mu.RLock()
	if s.sub != nil {
		C.agentvm_subscription_close(s.sub)
	}
	s.mu.RUnlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sub != nil {
		C.agentvm_subscription_free(s.sub)
		s.sub = nil
	}
}
