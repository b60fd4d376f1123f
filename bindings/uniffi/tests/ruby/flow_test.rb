# The flow of bindings/c/tests/flow.c through the uniffi-generated Ruby module
# (AgentvmUniffi): open with a mock LLM and a temporary data dir, image create, subscribe,
# message send, events until conversation_end, history, serve and connect, a sandbox exec on
# Docker, error kinds, a `sleep 5` exec cancelled by its cancel id from another thread,
# concurrent requests from threads, close. uniffi's Ruby backend runs the async methods as
# blocking calls (the thread waits, the GVL released). Run by scripts/test-uniffi.sh with the
# generated code on the load path. AGENTVM_SKIP_DOCKER=1 skips the sandbox parts.

# Ruby 3.1 (Debian 12) has IO#wait_readable, which the generated async calls use, only here.
require 'io/wait'
require 'json'
require 'minitest/autorun'
require 'tmpdir'
require 'agentvm_uniffi'

class FlowTest < Minitest::Test
  AgentVm = AgentvmUniffi::AgentVm
  Errors = AgentvmUniffi::AgentVmError
  DOCKER = ENV['AGENTVM_SKIP_DOCKER'] != '1'
  SCHEDULER = { nodes: [{ nodeId: 'local', apiEndpoint: 'unix:///var/run/docker.sock' }] }.freeze

  def setup
    @dir = Dir.mktmpdir('agentvm-rb-uniffi-')
    options = { llm: 'mock', dataDir: @dir }
    options[:scheduler] = SCHEDULER if DOCKER
    @vm = AgentVm.open(JSON.generate(options))
  end

  def teardown
    @vm.close
    FileUtils.remove_entry(@dir)
  end

  def request(name, vm: @vm, cancel_id: nil, **data)
    JSON.parse(vm.request(JSON.generate(type: "#{name}_request", data: data), 60_000, cancel_id))
  end

  def image(container_id)
    record = request('image_create', containerId: container_id)['record']
    assert record['imageId'].start_with?('img_'), record.inspect
    assert record['sessionId'].start_with?('sess_'), record.inspect
    record
  end

  def subscribe(session_id)
    @vm.subscribe(JSON.generate(sessions: [{ sessionId: session_id }]))
  end

  def events_until_end(stream)
    events = []
    deadline = Time.now + 30
    until events.any? { |e| e['type'] == 'conversation_end' }
      assert Time.now < deadline, events.map { |e| e['type'] }.inspect
      batch = stream.next(4, 10_000)
      refute_nil batch, 'the stream ended early'
      items = JSON.parse(batch)
      assert_kind_of Array, items
      assert items.length <= 4
      events.concat(items)
    end
    events
  end

  def test_a_message_streams_to_conversation_end_and_lands_in_history
    assert @vm.is_local
    record = image('c-rb-flow')
    stream = subscribe(record['sessionId'])
    assert_equal '[]', stream.try_next, 'nothing waits before the message'
    sent = request('message_send', imageId: record['imageId'], content: 'Hello')
    assert_equal record['imageId'], sent['imageId']

    events = events_until_end(stream)
    types = events.map { |e| e['type'] }
    assert_equal 'conversation_end', types.last
    assert_includes types, 'text_delta'
    assert types.index('message_start') < types.index('text_delta'), types.inspect
    cursors = events.filter_map { |e| e['cursor'] }
    assert_equal cursors.sort, cursors, 'cursors rise'
    streamed = events.select { |e| e['type'] == 'text_delta' }.map { |e| e['data']['text'] }.join
    refute_empty streamed

    messages = request('session_messages', sessionId: record['sessionId'])['messages']
    assert_equal %w[user assistant], messages.map { |m| m['role'] }
    assert_includes JSON.generate(messages[0]), 'Hello'
    assert_includes JSON.generate(messages[1]), streamed, 'the streamed text is stored'

    stream.close
    assert_nil stream.next(0, 1000), 'a closed stream ends'
    assert stream.is_ended
  end

  def test_serve_and_connect
    image('c-rb-remote')
    served = @vm.serve(JSON.generate(addr: '127.0.0.1:0', auth: 'disabled'))
    assert served.ws_url.start_with?('ws://127.0.0.1:'), served.inspect
    far = AgentVm.connect(JSON.generate(url: served.ws_url, timeoutMs: 10_000))
    begin
      refute far.is_local
      assert_includes request('container_list', vm: far)['containerIds'], 'c-rb-remote'
    ensure
      far.close
    end
  end

  def test_errors_carry_their_kind
    assert_raises(Errors::InvalidInput) { AgentVm.open(JSON.generate(bogus: 1)) }
    bad = assert_raises(Errors::InvalidInput) { @vm.request('{not json') }
    assert_includes bad.message, 'Invalid request JSON'
    unknown = assert_raises(Errors::InvalidInput) do
      @vm.request(JSON.generate(type: 'frobnicate_request', data: {}))
    end
    assert_includes unknown.message, 'Unknown request type: frobnicate_request'
    missing = assert_raises(Errors::NotFound) do
      request('message_send', imageId: 'img_nope', content: 'x')
    end
    assert_includes missing.message, 'img_nope'
    refute @vm.cancel(424_242), 'no call runs with that id'
  end

  def test_close_ends_streams_and_refuses_calls
    stream = @vm.subscribe(JSON.generate(global: true))
    @vm.close
    assert @vm.is_closed
    while (batch = stream.next(0, 1000))
      assert batch.start_with?('[')
    end
    assert_raises(Errors::Cancelled) { request('image_list') }
  end

  def test_a_waiting_next_ends_when_another_thread_closes_the_stream
    stream = subscribe(image('c-rb-close')['sessionId'])
    closer = Thread.new do
      sleep 0.2
      stream.close
    end
    started = Time.now
    assert_nil stream.next(0, nil), 'no timeout: waits until the stream is closed'
    assert Time.now - started < 5
    closer.join
  end

  def test_threads_share_one_handle
    records = 8.times.map { |i| Thread.new { image("c-rb-#{i}") } }.map(&:value)
    assert_equal 8, records.map { |r| r['imageId'] }.uniq.length
    listed = request('container_list')['containerIds']
    8.times { |i| assert_includes listed, "c-rb-#{i}" }
    # Two turns streaming at once, each read by its own thread.
    streams = records.first(2).map { |r| subscribe(r['sessionId']) }
    records.first(2).each { |r| request('message_send', imageId: r['imageId'], content: 'together') }
    ends = streams.map { |s| Thread.new { events_until_end(s) } }.map(&:value)
    ends.each { |events| assert_equal 'conversation_end', events.last['type'] }
  end

  def test_sandbox_exec_and_a_cancelled_exec
    skip 'AGENTVM_SKIP_DOCKER=1' unless DOCKER
    request('template_create', templateId: 'tpl-rb-uniffi', name: 'rb uniffi',
                               image: 'agentvm-test/busybox:latest')
    sandbox = request('sandbox_create', templateId: 'tpl-rb-uniffi')['sandbox']
    assert_equal 'running', sandbox['status']
    begin
      execution = request('sandbox_exec', sandboxId: sandbox['id'], command: %w[echo hi])['execution']
      assert_equal "hi\n", execution['stdout']
      assert_equal 'completed', execution['status']

      # `sleep 5` cancelled by its cancel id from another thread: the wait ends at once; the
      # exec itself is then killed with sandbox_exec_cancel_request.
      started = Time.now
      sleeper = Thread.new do
        request('sandbox_exec', sandboxId: sandbox['id'], command: %w[sleep 5],
                                executionId: 'exec_rb_uniffi_sleep', cancel_id: 9)
      rescue Errors::Cancelled => e
        e
      end
      sleep 0.5
      assert @vm.cancel(9)
      cancelled = sleeper.value
      assert_kind_of Errors::Cancelled, cancelled
      assert_includes cancelled.message, 'cancelled by the caller (id 9)'
      assert Time.now - started < 3
      stopped = request('sandbox_exec_cancel', executionId: 'exec_rb_uniffi_sleep')
      assert stopped['cancelled'], stopped.inspect
      assert_equal 'cancelled', stopped['execution']['status']
    ensure
      request('sandbox_delete', sandboxId: sandbox['id'])
      request('template_delete', templateId: 'tpl-rb-uniffi')
    end
  end
end
