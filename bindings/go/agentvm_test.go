package agentvm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

func docker() bool { return os.Getenv("AGENTVM_SKIP_DOCKER") != "1" }

func open(t *testing.T) *Runtime {
	t.Helper()
	options := map[string]any{"llm": "mock", "dataDir": t.TempDir()}
	if docker() {
		options["scheduler"] = map[string]any{"nodes": []any{map[string]any{
			"nodeId": "local", "apiEndpoint": "unix:///var/run/docker.sock"}}}
	}
	text, _ := json.Marshal(options)
	rt, err := Open(string(text))
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { _ = rt.Close() })
	return rt
}

func request(t *testing.T, rt *Runtime, typ string, data map[string]any) map[string]any {
	t.Helper()
	text, _ := json.Marshal(map[string]any{"type": typ, "data": data})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	answer, err := rt.Request(ctx, string(text))
	if err != nil {
		t.Fatalf("%s: %v", typ, err)
	}
	var out map[string]any
	if err := json.Unmarshal([]byte(answer), &out); err != nil {
		t.Fatalf("%s answered %q: %v", typ, answer, err)
	}
	return out
}

func TestFlow(t *testing.T) {
	rt := open(t)
	image := request(t, rt, "image_create_request", map[string]any{"containerId": "c-go"})
	record := image["record"].(map[string]any)
	session, imageID := record["sessionId"].(string), record["imageId"].(string)

	sub, err := rt.Subscribe(`{"sessions":[{"sessionId":"` + session + `"}]}`)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()

	// A reader goroutine streams to conversation_end while other goroutines send requests.
	type result struct {
		deltas int
		err    error
	}
	got := make(chan result, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		deltas := 0
		for {
			batch, err := sub.Next(ctx, 16)
			if err != nil {
				got <- result{deltas, err}
				return
			}
			var events []map[string]any
			if err := json.Unmarshal([]byte(batch), &events); err != nil {
				got <- result{deltas, err}
				return
			}
			for _, e := range events {
				switch e["type"] {
				case "text_delta":
					deltas++
				case "conversation_end":
					got <- result{deltas, nil}
					return
				}
			}
		}
	}()
	request(t, rt, "message_send_request", map[string]any{"imageId": imageID, "content": "Hello"})
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			text := `{"type":"image_get_request","data":{"imageId":"` + imageID + `"}}`
			if _, err := rt.Request(context.Background(), text); err != nil {
				t.Errorf("image_get from a goroutine: %v", err)
			}
		}()
	}
	wg.Wait()
	r := <-got
	if r.err != nil || r.deltas == 0 {
		t.Fatalf("stream: %d text deltas, err %v", r.deltas, r.err)
	}

	history := request(t, rt, "session_messages_request", map[string]any{"sessionId": session})
	roles := map[string]bool{}
	for _, m := range history["messages"].([]any) {
		roles[m.(map[string]any)["role"].(string)] = true
	}
	if !roles["user"] || !roles["assistant"] {
		t.Fatalf("history roles %v", roles)
	}

	if docker() {
		request(t, rt, "template_create_request", map[string]any{
			"templateId": "tpl-go-flow", "name": "go flow", "image": "agentvm-test/busybox:latest"})
		sandbox := request(t, rt, "sandbox_create_request", map[string]any{"templateId": "tpl-go-flow"})
		id := sandbox["sandbox"].(map[string]any)["id"].(string)
		exec := request(t, rt, "sandbox_exec_request", map[string]any{
			"sandboxId": id, "command": []string{"echo", "hi"}})
		execution := exec["execution"].(map[string]any)
		if execution["stdout"] != "hi\n" || execution["status"] != "completed" {
			t.Fatalf("exec: %v", execution)
		}
		// Cancelling the context ends a long call with Cancelled.
		ctx, cancel := context.WithCancel(context.Background())
		go func() { time.Sleep(200 * time.Millisecond); cancel() }()
		started := time.Now()
		_, err := rt.Request(ctx, `{"type":"sandbox_exec_request","data":{"sandboxId":"`+id+`","command":["sleep","5"]}}`)
		var e *Error
		if !errors.As(err, &e) || e.Code != Cancelled || time.Since(started) > 3*time.Second {
			t.Fatalf("cancelled exec: %v after %v", err, time.Since(started))
		}
		request(t, rt, "sandbox_delete_request", map[string]any{"sandboxId": id})
		request(t, rt, "template_delete_request", map[string]any{"templateId": "tpl-go-flow"})
	}
}

func TestErrorsCarryKindAndMessage(t *testing.T) {
	rt := open(t)
	_, err := rt.Request(context.Background(), "{not json")
	var e *Error
	if !errors.As(err, &e) || e.Code != InvalidInput || !strings.Contains(e.Message, "Invalid request JSON") {
		t.Fatalf("bad JSON: %v", err)
	}
	_, err = rt.Request(context.Background(), `{"type":"frobnicate_request","data":{}}`)
	if !errors.As(err, &e) || e.Code != InvalidInput || !strings.Contains(e.Message, "Unknown request type") {
		t.Fatalf("unknown command: %v", err)
	}
	if _, err := Open(`{"bogus":1}`); !errors.As(err, &e) || e.Code != InvalidInput {
		t.Fatalf("bad options: %v", err)
	}
}

func TestContextCancellation(t *testing.T) {
	rt := open(t)
	sub, err := rt.Subscribe(`{"global":true}`)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	// Nothing happens: Next waits until the context ends.
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
	defer cancel()
	if _, err := sub.Next(ctx, 1); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Next after the deadline: %v", err)
	}
	// An expired context is refused before the call.
	expired, cancel2 := context.WithCancel(context.Background())
	cancel2()
	var e *Error
	if _, err := rt.Request(expired, `{"type":"image_list_request","data":{}}`); !errors.As(err, &e) || e.Code != Cancelled {
		t.Fatalf("expired context: %v", err)
	}
	// Close ends a waiting Next in another goroutine.
	ended := make(chan error, 1)
	go func() { _, err := sub.Next(context.Background(), 1); ended <- err }()
	time.Sleep(50 * time.Millisecond)
	if err := rt.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-ended:
		if !errors.Is(err, ErrEnded) {
			t.Fatalf("Next after Close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not end a waiting Next")
	}
}

// A server that accepts TCP but never answers the WebSocket handshake: ConnectContext ends
// when its context does, by deadline or by cancel, and hands out no runtime.
func TestConnectToAStalledServerEndsWithItsContext(t *testing.T) {
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	options := fmt.Sprintf(`{"url":"ws://%s/ws","timeoutMs":60000}`, silent.Addr())

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	started := time.Now()
	var e *Error
	if rt, err := ConnectContext(ctx, options); !errors.As(err, &e) || e.Code != Cancelled || rt != nil {
		t.Fatalf("connect past its deadline: %v, %v", rt, err)
	}
	if waited := time.Since(started); waited > 5*time.Second {
		t.Fatalf("the deadline did not end the connect: %v", waited)
	}

	ctx2, cancel2 := context.WithCancel(context.Background())
	go func() { time.Sleep(100 * time.Millisecond); cancel2() }()
	if rt, err := ConnectContext(ctx2, options); !errors.As(err, &e) || e.Code != Cancelled || rt != nil {
		t.Fatalf("connect cancelled by its context: %v, %v", rt, err)
	}
	if !strings.Contains(e.Message, "cancelled by the caller") {
		t.Fatalf("the message says why: %q", e.Message)
	}
}
