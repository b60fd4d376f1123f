"""The flow of bindings/c/tests/flow.c through the uniffi-generated Python module
(`agentvm_uniffi`, never `agentvm`), with asyncio: open with a mock LLM and a temporary data
dir, image create, subscribe, message send, events until conversation_end, history, serve and
connect, a sandbox exec on Docker, error kinds, cancellation (an asyncio task and a cancel id),
concurrent requests, close. Run by scripts/test-uniffi.sh with the generated module on
PYTHONPATH. AGENTVM_SKIP_DOCKER=1 skips the sandbox parts.
"""

import asyncio
import json
import os
import tempfile
import time
import unittest

import agentvm_uniffi
from agentvm_uniffi import AgentVm, AgentVmError

DOCKER = os.environ.get("AGENTVM_SKIP_DOCKER") != "1"
SCHEDULER = {"nodes": [{"nodeId": "local", "apiEndpoint": "unix:///var/run/docker.sock"}]}
IMAGE = "agentvm-test/busybox:latest"


class FlowTest(unittest.IsolatedAsyncioTestCase):
    async def asyncSetUp(self):
        self.dir = tempfile.TemporaryDirectory(prefix="agentvm-py-uniffi-")
        self.addCleanup(self.dir.cleanup)
        options = {"llm": "mock", "dataDir": self.dir.name}
        if DOCKER:
            options["scheduler"] = SCHEDULER
        self.vm = await AgentVm.open(json.dumps(options))

    async def asyncTearDown(self):
        await self.vm.close()

    async def request(self, name, /, *, vm=None, **data):
        answer = await (vm or self.vm).request(
            json.dumps({"type": f"{name}_request", "data": data}), timeout_ms=60_000
        )
        return json.loads(answer)

    async def image(self, container_id):
        record = (await self.request("image_create", containerId=container_id))["record"]
        self.assertTrue(record["imageId"].startswith("img_"), record)
        self.assertTrue(record["sessionId"].startswith("sess_"), record)
        return record

    async def events_until_end(self, stream):
        events = []
        deadline = time.monotonic() + 30
        while not any(e["type"] == "conversation_end" for e in events):
            self.assertLess(time.monotonic(), deadline, [e["type"] for e in events])
            batch = await stream.next(max=4, timeout_ms=10_000)
            self.assertIsNotNone(batch, "the stream ended early")
            items = json.loads(batch)
            self.assertIsInstance(items, list)
            self.assertLessEqual(len(items), 4)
            events.extend(items)
        return events

    async def test_the_module_is_not_agentvm(self):
        self.assertEqual(agentvm_uniffi.__name__, "agentvm_uniffi")
        self.assertTrue(self.vm.is_local())

    async def test_message_streams_to_conversation_end_and_lands_in_history(self):
        record = await self.image("c-py-flow")
        stream = await self.vm.subscribe(
            json.dumps({"sessions": [{"sessionId": record["sessionId"]}]})
        )
        self.assertEqual(stream.try_next(), "[]", "nothing waits before the message")
        sent = await self.request("message_send", imageId=record["imageId"], content="Hello")
        self.assertEqual(sent["imageId"], record["imageId"])

        events = await self.events_until_end(stream)
        types = [e["type"] for e in events]
        self.assertEqual(types[-1], "conversation_end", types)
        self.assertIn("text_delta", types)
        self.assertLess(types.index("message_start"), types.index("text_delta"), types)
        cursors = [e["cursor"] for e in events if "cursor" in e]
        self.assertEqual(cursors, sorted(cursors), "cursors rise")
        streamed = "".join(e["data"]["text"] for e in events if e["type"] == "text_delta")
        self.assertTrue(streamed)

        history = await self.request("session_messages", sessionId=record["sessionId"])
        messages = history["messages"]
        self.assertEqual([m["role"] for m in messages], ["user", "assistant"], messages)
        self.assertIn("Hello", json.dumps(messages[0]))
        self.assertIn(streamed, json.dumps(messages[1]), "the streamed text is stored")

        stream.close()
        self.assertIsNone(await stream.next(timeout_ms=1000), "a closed stream ends")
        self.assertTrue(stream.is_ended())

    async def test_serve_and_connect(self):
        await self.image("c-py-remote")
        served = await self.vm.serve(json.dumps({"addr": "127.0.0.1:0", "auth": "disabled"}))
        self.assertTrue(served.ws_url.startswith("ws://127.0.0.1:"), served)
        self.assertGreater(served.port, 0)
        far = await AgentVm.connect(json.dumps({"url": served.ws_url, "timeoutMs": 10_000}))
        try:
            self.assertFalse(far.is_local())
            listed = await self.request("container_list", vm=far)
            self.assertIn("c-py-remote", listed["containerIds"])
        finally:
            await far.close()

    async def test_errors_carry_their_kind(self):
        with self.assertRaises(AgentVmError.InvalidInput):
            await AgentVm.open(json.dumps({"bogus": 1}))
        with self.assertRaises(AgentVmError.InvalidInput) as bad:
            await self.vm.request("{not json")
        self.assertIn("Invalid request JSON", str(bad.exception))
        with self.assertRaises(AgentVmError.InvalidInput) as unknown:
            await self.vm.request(json.dumps({"type": "frobnicate_request", "data": {}}))
        self.assertIn("Unknown request type: frobnicate_request", str(unknown.exception))
        with self.assertRaises(AgentVmError.NotFound) as missing:
            await self.request("message_send", imageId="img_nope", content="x")
        self.assertIn("img_nope", str(missing.exception))
        self.assertIsInstance(missing.exception, AgentVmError)
        self.assertFalse(self.vm.cancel(424242), "no call runs with that id")

    async def test_close_ends_streams_and_refuses_calls(self):
        stream = await self.vm.subscribe(json.dumps({"global": True}))
        await self.vm.close()
        self.assertTrue(self.vm.is_closed())
        while (batch := await stream.next(timeout_ms=1000)) is not None:
            self.assertTrue(batch.startswith("["))
        with self.assertRaises(AgentVmError.Cancelled):
            await self.request("image_list")

    async def test_cancelling_the_asyncio_task_cancels_the_wait(self):
        record = await self.image("c-py-cancel")
        stream = await self.vm.subscribe(
            json.dumps({"sessions": [{"sessionId": record["sessionId"]}]})
        )
        waiting = asyncio.create_task(stream.next())  # no timeout: waits for an event
        await asyncio.sleep(0.2)
        self.assertFalse(waiting.done())
        waiting.cancel()
        with self.assertRaises(asyncio.CancelledError):
            await waiting
        # The stream goes on: the next message's events all arrive.
        await self.request("message_send", imageId=record["imageId"], content="again")
        events = await self.events_until_end(stream)
        self.assertEqual(events[-1]["type"], "conversation_end")

    async def test_concurrent_requests_on_one_handle(self):
        records = await asyncio.gather(*(self.image(f"c-py-{i}") for i in range(8)))
        self.assertEqual(len({r["imageId"] for r in records}), 8)
        listed = await self.request("container_list")
        for i in range(8):
            self.assertIn(f"c-py-{i}", listed["containerIds"])
        # Two turns streaming at once, each read by its own task.
        streams = [
            await self.vm.subscribe(json.dumps({"sessions": [{"sessionId": r["sessionId"]}]}))
            for r in records[:2]
        ]
        for r in records[:2]:
            await self.request("message_send", imageId=r["imageId"], content="together")
        ends = await asyncio.gather(*(self.events_until_end(s) for s in streams))
        for events in ends:
            self.assertEqual(events[-1]["type"], "conversation_end")
            sessions = {e.get("context", {}).get("sessionId") for e in events} - {None}
            self.assertEqual(len(sessions), 1, "each stream has only its session's events")

    @unittest.skipUnless(DOCKER, "AGENTVM_SKIP_DOCKER=1")
    async def test_sandbox_exec_and_a_cancelled_exec(self):
        await self.request("template_create", templateId="tpl-py-uniffi", name="py uniffi", image=IMAGE)
        sandbox = (await self.request("sandbox_create", templateId="tpl-py-uniffi"))["sandbox"]
        self.assertEqual(sandbox["status"], "running", sandbox)
        try:
            execution = (
                await self.request("sandbox_exec", sandboxId=sandbox["id"], command=["echo", "hi"])
            )["execution"]
            self.assertEqual(execution["stdout"], "hi\n", execution)
            self.assertEqual(execution["status"], "completed", execution)

            # A `sleep 5` cancelled through its cancel id from another task ends the wait
            # at once; the exec itself is then killed with sandbox_exec_cancel_request.
            command = json.dumps({"type": "sandbox_exec_request", "data": {
                "sandboxId": sandbox["id"], "command": ["sleep", "5"],
                "executionId": "exec_py_uniffi_sleep"}})
            started = time.monotonic()
            sleeping = asyncio.create_task(self.vm.request(command, timeout_ms=60_000, cancel_id=7))
            await asyncio.sleep(0.5)
            self.assertTrue(self.vm.cancel(7))
            with self.assertRaises(AgentVmError.Cancelled) as cancelled:
                await sleeping
            self.assertIn("cancelled by the caller (id 7)", str(cancelled.exception))
            self.assertLess(time.monotonic() - started, 3)
            stopped = await self.request("sandbox_exec_cancel", executionId="exec_py_uniffi_sleep")
            self.assertTrue(stopped["cancelled"], stopped)
            self.assertEqual(stopped["execution"]["status"], "cancelled", stopped)
        finally:
            await self.request("sandbox_delete", sandboxId=sandbox["id"])
            await self.request("template_delete", templateId="tpl-py-uniffi")


if __name__ == "__main__":
    unittest.main()
