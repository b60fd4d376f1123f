/*
 * The full flow of the C ABI, as a C program uses it: open (mock LLM, temporary data dir),
 * image create, message send, events until conversation_end (text deltas seen, through the
 * file descriptor and blocking next), session history, a sandbox exec when Docker is there,
 * bad JSON and an unknown command, close. Exit status 0 on success; run under valgrind by
 * tests/c_flow.rs. AGENTVM_SKIP_DOCKER=1 skips the sandbox part.
 */
#include "agentvm.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sys/socket.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int failures = 0;

#define CHECK(cond, ...)                                                                  \
    do {                                                                                  \
        if (!(cond)) {                                                                    \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                          \
            fprintf(stderr, __VA_ARGS__);                                                 \
            fprintf(stderr, "\n");                                                        \
            failures++;                                                                   \
            return 1;                                                                     \
        }                                                                                 \
    } while (0)

#define OK(call)                                                                          \
    do {                                                                                  \
        AgentvmResult rc_ = (call);                                                       \
        if (rc_ != AGENTVM_RESULT_OK) {                                                   \
            const char *msg_ = agentvm_last_error();                                      \
            fprintf(stderr, "FAIL %s:%d: %s -> %d: %s\n", __FILE__, __LINE__, #call, rc_,  \
                    msg_ ? msg_ : "(no message)");                                        \
            failures++;                                                                   \
            return 1;                                                                     \
        }                                                                                 \
    } while (0)

/* Copies the string value of the first `"key":"` in json into out (NUL-terminated). */
static int json_string(const char *json, const char *key, char *out, size_t cap) {
    char pattern[128];
    snprintf(pattern, sizeof pattern, "\"%s\":\"", key);
    const char *at = strstr(json, pattern);
    if (!at) return 0;
    at += strlen(pattern);
    const char *end = strchr(at, '"');
    if (!end || (size_t)(end - at) >= cap) return 0;
    memcpy(out, at, (size_t)(end - at));
    out[end - at] = '\0';
    return 1;
}

static int count(const char *haystack, const char *needle) {
    int n = 0;
    for (const char *p = strstr(haystack, needle); p; p = strstr(p + 1, needle)) n++;
    return n;
}

/* Runs `request` and expects success; the answer goes to *out (freed by the caller). */
static int request(AgentvmRuntime *rt, const char *json, char **out) {
    OK(agentvm_request(rt, json, 60000, 0, out));
    CHECK(*out != NULL, "an answer");
    return 0;
}

static int chat(AgentvmRuntime *rt) {
    char *answer = NULL;
    if (request(rt, "{\"type\":\"image_create_request\",\"data\":{\"containerId\":\"c-flow\"}}",
                &answer))
        return 1;
    char session[128], image[128];
    int found = json_string(answer, "sessionId", session, sizeof session) &&
                json_string(answer, "imageId", image, sizeof image);
    agentvm_string_free(answer);
    CHECK(found, "image_create answers sessionId and imageId");

    char buf[512];
    snprintf(buf, sizeof buf, "{\"sessions\":[{\"sessionId\":\"%s\"}]}", session);
    AgentvmSubscription *sub = NULL;
    OK(agentvm_subscribe(rt, buf, &sub));
    int fd = agentvm_subscription_fd(sub);
    CHECK(fd >= 0, "a file descriptor");
    char *batch = NULL;
    CHECK(agentvm_subscription_try_next(sub, 0, &batch) == AGENTVM_RESULT_NO_EVENTS && !batch,
          "nothing waits before the message");

    snprintf(buf, sizeof buf,
             "{\"type\":\"message_send_request\",\"data\":{\"imageId\":\"%s\",\"content\":\"Hello\"}}",
             image);
    if (request(rt, buf, &answer)) return 1;
    agentvm_string_free(answer);

    int deltas = 0, ended = 0, polled = 0, rounds = 0;
    while (!ended && rounds++ < 1000) {
        AgentvmResult rc;
        if (rounds % 2) {
            /* The event-loop way: wait for the fd, then take what waits without blocking. */
            struct pollfd p = {.fd = fd, .events = POLLIN};
            CHECK(poll(&p, 1, 10000) == 1, "the fd becomes readable");
            polled++;
            rc = agentvm_subscription_try_next(sub, 4, &batch);
            if (rc == AGENTVM_RESULT_NO_EVENTS) continue;
        } else {
            rc = agentvm_subscription_next(sub, 10000, 4, &batch);
        }
        CHECK(rc == AGENTVM_RESULT_OK, "events before the timeout (rc %d)", rc);
        CHECK(batch[0] == '[', "a batch is a JSON array: %s", batch);
        deltas += count(batch, "\"type\":\"text_delta\"");
        ended = count(batch, "\"type\":\"conversation_end\"") > 0;
        agentvm_string_free(batch);
    }
    CHECK(ended, "conversation_end arrives");
    CHECK(deltas > 0, "text deltas arrive");
    CHECK(polled > 0, "the fd was used");
    printf("ok: %d text deltas, conversation_end\n", deltas);

    OK(agentvm_subscription_close(sub));
    AgentvmResult rc = agentvm_subscription_next(sub, 1000, 0, &batch);
    while (rc == AGENTVM_RESULT_OK) {
        agentvm_string_free(batch);
        rc = agentvm_subscription_next(sub, 1000, 0, &batch);
    }
    CHECK(rc == AGENTVM_RESULT_ENDED && !batch, "a closed subscription ends (rc %d)", rc);
    agentvm_subscription_free(sub);

    snprintf(buf, sizeof buf,
             "{\"type\":\"session_messages_request\",\"data\":{\"sessionId\":\"%s\"}}", session);
    if (request(rt, buf, &answer)) return 1;
    int user = strstr(answer, "\"role\":\"user\"") != NULL;
    int assistant = strstr(answer, "\"role\":\"assistant\"") != NULL;
    agentvm_string_free(answer);
    CHECK(user && assistant, "history has the user and the assistant message");
    printf("ok: history has both messages\n");
    return 0;
}

static int errors(AgentvmRuntime *rt) {
    char *answer = (char *)1;
    AgentvmResult rc = agentvm_request(rt, "{not json", -1, 0, &answer);
    CHECK(rc == AGENTVM_RESULT_INVALID_INPUT, "bad JSON is INVALID_INPUT (rc %d)", rc);
    CHECK(answer == NULL, "no answer on failure");
    const char *msg = agentvm_last_error();
    CHECK(msg && strstr(msg, "Invalid request JSON"), "message: %s", msg ? msg : "(null)");

    rc = agentvm_request(rt, "{\"type\":\"frobnicate_request\",\"data\":{}}", -1, 0, &answer);
    CHECK(rc == AGENTVM_RESULT_INVALID_INPUT, "unknown command is INVALID_INPUT (rc %d)", rc);
    msg = agentvm_last_error();
    CHECK(msg && strstr(msg, "Unknown request type: frobnicate_request"), "message: %s",
          msg ? msg : "(null)");

    rc = agentvm_request(rt, "{\"type\":\"message_send_request\",\"data\":{\"imageId\":\"img_nope\",\"content\":\"x\"}}",
                         -1, 0, &answer);
    CHECK(rc == AGENTVM_RESULT_NOT_FOUND, "an unknown image is NOT_FOUND (rc %d)", rc);

    CHECK(agentvm_request(NULL, "{}", -1, 0, &answer) == AGENTVM_RESULT_NULL_ARGUMENT,
          "NULL runtime");
    CHECK(agentvm_cancel(rt, 424242) == AGENTVM_RESULT_NOT_FOUND, "cancel of no call");

    /* A success clears the last error. */
    if (request(rt, "{\"type\":\"image_list_request\",\"data\":{}}", &answer)) return 1;
    agentvm_string_free(answer);
    CHECK(agentvm_last_error() == NULL, "no last error after a success");
    printf("ok: error codes and messages\n");
    return 0;
}

static int sandbox(AgentvmRuntime *rt) {
    char *answer = NULL;
    if (request(rt,
                "{\"type\":\"template_create_request\",\"data\":{\"templateId\":\"tpl-c-flow\","
                "\"name\":\"c flow\",\"image\":\"agentvm-test/busybox:latest\"}}",
                &answer))
        return 1;
    agentvm_string_free(answer);
    if (request(rt, "{\"type\":\"sandbox_create_request\",\"data\":{\"templateId\":\"tpl-c-flow\"}}",
                &answer))
        return 1;
    char sandbox_id[128];
    int found = json_string(answer, "id", sandbox_id, sizeof sandbox_id);
    agentvm_string_free(answer);
    CHECK(found, "sandbox_create answers the sandbox");

    char buf[512];
    snprintf(buf, sizeof buf,
             "{\"type\":\"sandbox_exec_request\",\"data\":{\"sandboxId\":\"%s\",\"command\":[\"echo\",\"hi\"]}}",
             sandbox_id);
    if (request(rt, buf, &answer)) return 1;
    int said_hi = strstr(answer, "\"stdout\":\"hi\\n\"") != NULL;
    int completed = strstr(answer, "\"status\":\"completed\"") != NULL;
    if (!said_hi || !completed) fprintf(stderr, "exec: %s\n", answer);
    agentvm_string_free(answer);
    CHECK(said_hi && completed, "echo hi prints hi");

    snprintf(buf, sizeof buf, "{\"type\":\"sandbox_delete_request\",\"data\":{\"sandboxId\":\"%s\"}}",
             sandbox_id);
    if (request(rt, buf, &answer)) return 1;
    agentvm_string_free(answer);
    if (request(rt, "{\"type\":\"template_delete_request\",\"data\":{\"templateId\":\"tpl-c-flow\"}}",
                &answer))
        return 1;
    agentvm_string_free(answer);
    printf("ok: sandbox exec echo hi\n");
    return 0;
}

/* Serves the runtime in this process and talks to it through a second, remote handle. */
static int remote(AgentvmRuntime *rt) {
    char *served = NULL;
    OK(agentvm_serve(rt, "{\"addr\":\"127.0.0.1:0\",\"auth\":\"disabled\"}", &served));
    char ws[256];
    int found = json_string(served, "wsUrl", ws, sizeof ws);
    agentvm_string_free(served);
    CHECK(found, "serve answers wsUrl");
    char options[512];
    snprintf(options, sizeof options, "{\"url\":\"%s\",\"timeoutMs\":10000}", ws);
    AgentvmRuntime *far = NULL;
    OK(agentvm_connect(options, 10000, 0, &far));
    char *answer = NULL;
    AgentvmResult rc = agentvm_request(far, "{\"type\":\"container_list_request\",\"data\":{}}",
                                       10000, 0, &answer);
    int listed = rc == AGENTVM_RESULT_OK && strstr(answer, "c-flow") != NULL;
    agentvm_string_free(answer);
    agentvm_runtime_free(far);
    CHECK(listed, "the remote handle lists the container made locally (rc %d)", rc);
    printf("ok: serve and connect\n");
    return 0;
}

static void *cancel_opening_later(void *id) {
    usleep(150 * 1000);
    agentvm_cancel(NULL, *(uint64_t *)id);
    return NULL;
}

/* A server that accepts TCP but never answers the WebSocket handshake: a connect ends at its
 * timeout, or when another thread cancels it by id, with CANCELLED and no handle. */
static int stalled_connect(void) {
    int silent = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof addr;
    CHECK(silent >= 0 && bind(silent, (struct sockaddr *)&addr, sizeof addr) == 0 &&
              listen(silent, 4) == 0 && getsockname(silent, (struct sockaddr *)&addr, &len) == 0,
          "a silent listener");
    char options[256];
    snprintf(options, sizeof options, "{\"url\":\"ws://127.0.0.1:%d/ws\",\"timeoutMs\":60000}",
             ntohs(addr.sin_port));
    AgentvmRuntime *far = NULL;
    AgentvmResult rc = agentvm_connect(options, 200, 0, &far);
    CHECK(rc == AGENTVM_RESULT_CANCELLED && far == NULL, "a stalled connect times out (rc %d)", rc);
    CHECK(strstr(agentvm_last_error(), "timed out") != NULL, "and says so: %s", agentvm_last_error());

    uint64_t id = 7001;
    pthread_t canceller;
    CHECK(pthread_create(&canceller, NULL, cancel_opening_later, &id) == 0, "a canceller thread");
    rc = agentvm_connect(options, -1, id, &far);
    pthread_join(canceller, NULL);
    CHECK(rc == AGENTVM_RESULT_CANCELLED && far == NULL, "a stalled connect is cancelled (rc %d)", rc);
    CHECK(strstr(agentvm_last_error(), "cancelled by the caller") != NULL, "and says so: %s",
          agentvm_last_error());
    CHECK(agentvm_cancel(NULL, id) == AGENTVM_RESULT_NOT_FOUND, "the id is free again");
    close(silent);
    printf("ok: stalled connect: timeout and cancel\n");
    return 0;
}

int main(void) {
    const char *skip = getenv("AGENTVM_SKIP_DOCKER");
    int docker = !(skip && strcmp(skip, "1") == 0);
    char dir[] = "/tmp/agentvm-c-flow-XXXXXX";
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    char options[1024];
    snprintf(options, sizeof options,
             "{\"llm\":\"mock\",\"dataDir\":\"%s\"%s}", dir,
             docker ? ",\"scheduler\":{\"nodes\":[{\"nodeId\":\"local\","
                      "\"apiEndpoint\":\"unix:///var/run/docker.sock\"}]}"
                    : "");

    AgentvmRuntime *rt = NULL;
    CHECK(agentvm_open("{\"bogus\":1}", -1, 0, &rt) == AGENTVM_RESULT_INVALID_INPUT && rt == NULL,
          "unknown open option is refused");
    OK(agentvm_open(options, 30000, 0, &rt));
    if (chat(rt) || errors(rt) || remote(rt) || stalled_connect()) goto done;
    if (docker) {
        if (sandbox(rt)) goto done;
    } else {
        printf("skip: sandbox exec (AGENTVM_SKIP_DOCKER=1)\n");
    }
    OK(agentvm_close(rt));
    char *answer = NULL;
    CHECK(agentvm_request(rt, "{\"type\":\"image_list_request\",\"data\":{}}", -1, 0, &answer) ==
              AGENTVM_RESULT_CANCELLED,
          "a closed runtime refuses requests");
done:
    agentvm_runtime_free(rt);
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
    if (failures) return 1;
    printf("ok: C flow passed\n");
    return 0;
}
