#!/usr/bin/env node
// A therasync client in Node.js (20+), with no npm packages: it speaks
// ZeroMQ's wire protocol, ZMTP 3.0 (rfc.zeromq.org/spec/23), itself over
// node:net, NULL mechanism only (so not to a daemon with client keys).
//
// Creates a session, queries it back, watches its doc.changed event on the
// PUB socket, and follows a live query (`subscribe`, then `query.changed`
// notifications) while it changes the session. docs/PROTOCOL.md describes
// every method; `rpc.discover` answers them in OpenRPC.
//
//     node examples/node/client.mjs [ENDPOINT [EVENTS]]
//
// ENDPOINT and EVENTS default to $THERASYNC_ENDPOINT / $THERASYNC_EVENTS,
// else tcp://127.0.0.1:7410 and :7411 (`make run`). Needs the shipped
// policies (the `upcoming` selector). Exits 0 when every step worked.
import net from 'node:net';
import { randomBytes } from 'node:crypto';

const TIMEOUT_MS = 5000;
const MORE = 0x01, LONG = 0x02, COMMAND = 0x04; // frame flags

// One ZMTP 3.0 connection: greeting, READY both ways, then whole messages
// (arrays of Buffers) queued for recv().
class Zmtp {
  constructor(endpoint, socketType, identity = null) {
    const m = /^(tcp|ipc):\/\/(.+)$/.exec(endpoint);
    if (!m) throw new Error(`unsupported endpoint ${endpoint}`);
    const hp = m[1] === 'tcp' && /^(.*):(\d+)$/.exec(m[2]);
    if (m[1] === 'tcp' && !hp) throw new Error(`no port in ${endpoint}`);
    this.sock = m[1] === 'tcp' ? net.connect(+hp[2], hp[1].replace(/^\[|\]$/g, ''))
                               : net.connect(m[2]);
    this.buf = Buffer.alloc(0);
    this.greeted = false;
    this.parts = [];            // frames of the message being read
    this.queue = [];            // whole messages not yet taken
    this.waiter = null;         // the pending recv(), if any
    this.failure = null;
    this.ready = new Promise((resolve, reject) => { this.onReady = resolve; this.onFail = reject; });
    this.ready.catch(() => {}); // a failure is reported by whoever awaits next
    this.sock.on('data', (d) => { try { this.parse(d); } catch (e) { this.fail(e); } });
    // libzmq drops a peer with the wrong mechanism before its greeting is
    // through (a close, or a reset): a daemon with client keys (CURVE) does
    // that to us.
    const refused = () => new Error(`${endpoint}: closed during the greeting (client keys? this client has no CURVE)`);
    this.sock.on('error', (e) => this.fail(this.greeted ? e : refused()));
    this.sock.on('close', () => this.fail(this.greeted ? new Error(`${endpoint}: connection closed`)
      : refused()));
    // Greeting: signature, version 3.0, mechanism NULL, as-server 0, filler.
    const greeting = Buffer.alloc(64);
    greeting[0] = 0xff; greeting[9] = 0x7f; greeting[10] = 3; greeting[11] = 0;
    greeting.write('NULL', 12, 'ascii');
    this.sock.write(greeting);
    // READY names our socket type; a DEALER's Identity is its routing id.
    const props = [['Socket-Type', socketType]];
    if (identity) props.push(['Identity', identity]);
    this.sendFrame(COMMAND, command('READY', props));
  }

  fail(err) {
    if (this.failure) return;
    this.failure = err;
    this.onFail(err);
    if (this.waiter) this.waiter.reject(err);
    this.sock.destroy();
  }

  sendFrame(flags, body) {
    const long = body.length > 255;
    const head = Buffer.alloc(long ? 9 : 2);
    head[0] = flags | (long ? LONG : 0);
    if (long) head.writeBigUInt64BE(BigInt(body.length), 1); else head[1] = body.length;
    this.sock.write(Buffer.concat([head, body]));
  }

  send(...frames) {
    frames.forEach((f, i) => this.sendFrame(i < frames.length - 1 ? MORE : 0, Buffer.from(f)));
  }

  parse(data) {
    this.buf = Buffer.concat([this.buf, data]);
    if (!this.greeted) {
      if (this.buf.length < 64) return;
      const g = this.buf.subarray(0, 64);
      if (g[0] !== 0xff || g[9] !== 0x7f || g[10] < 3) throw new Error('peer does not speak ZMTP 3');
      const mech = g.subarray(12, 32).toString('ascii').replace(/\0+$/, '');
      if (mech !== 'NULL') throw new Error(`peer wants the ${mech} mechanism (client keys?): not supported here`);
      this.greeted = true;
      this.buf = this.buf.subarray(64);
    }
    for (;;) {
      if (this.buf.length < 2) return;
      const flags = this.buf[0], long = flags & LONG, headLen = long ? 9 : 2;
      if (this.buf.length < headLen) return;
      const size = long ? Number(this.buf.readBigUInt64BE(1)) : this.buf[1];
      if (this.buf.length < headLen + size) return;
      const body = this.buf.subarray(headLen, headLen + size);
      this.buf = this.buf.subarray(headLen + size);
      if (flags & COMMAND) this.onCommand(body);
      else {
        this.parts.push(Buffer.from(body));
        if (!(flags & MORE)) { this.deliver(this.parts); this.parts = []; }
      }
    }
  }

  onCommand(body) {
    const name = body.subarray(1, 1 + body[0]).toString('ascii');
    if (name === 'READY') this.onReady();
    else if (name === 'ERROR') throw new Error(`peer refused: ${body.subarray(7).toString()}`);
    // The daemon's ROUTER sends heartbeats (ZMTP 3.1 PING): answer with
    // their context so a slow step does not get us dropped.
    else if (name === 'PING') this.sendFrame(COMMAND, Buffer.concat([Buffer.from('\x04PONG'), body.subarray(7)]));
  }

  deliver(msg) {
    if (this.waiter) { const w = this.waiter; this.waiter = null; clearTimeout(w.timer); w.resolve(msg); }
    else this.queue.push(msg);
  }

  // The next whole message, or an error after timeoutMs.
  recv(timeoutMs) {
    if (this.queue.length) return Promise.resolve(this.queue.shift());
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => { this.waiter = null; reject(new Error('timed out')); }, Math.max(timeoutMs, 0));
      this.waiter = { resolve, reject: (e) => { clearTimeout(timer); reject(e); }, timer };
    });
  }

  close() { this.sock.destroy(); }
}

// A command body: name, then properties (1-byte name size, 4-byte value size).
function command(name, props) {
  const parts = [Buffer.from([name.length]), Buffer.from(name)];
  for (const [k, v] of props) {
    const val = Buffer.alloc(4);
    val.writeUInt32BE(Buffer.byteLength(v));
    parts.push(Buffer.from([k.length]), Buffer.from(k), val, Buffer.from(v));
  }
  return Buffer.concat(parts);
}

const withTimeout = (p, ms, what) => Promise.race([p, new Promise((_, reject) =>
  setTimeout(() => reject(new Error(`${what}: timed out`)), ms).unref())]);

// JSON-RPC 2.0 over the DEALER: one frame out, one frame back. Notifications
// (no id, e.g. query.changed) arriving meanwhile are kept.
class Client {
  constructor(endpoint) {
    // A printable routing id names this client in the audit trail.
    this.zmtp = new Zmtp(endpoint, 'DEALER', 'example-node-' + randomBytes(4).toString('hex'));
    this.nextId = 1;
    this.notifications = [];
  }

  async recvJson(timeoutMs, what) {
    const msg = await this.zmtp.recv(timeoutMs).catch((e) => { throw new Error(`${what}: ${e.message}`); });
    return JSON.parse(msg[msg.length - 1].toString());
  }

  async call(method, params) {
    await withTimeout(this.zmtp.ready, TIMEOUT_MS, 'connect');
    const id = this.nextId++;
    const req = { jsonrpc: '2.0', id, method };
    if (params !== undefined) req.params = params;
    this.zmtp.send(JSON.stringify(req));
    const deadline = Date.now() + TIMEOUT_MS;
    for (;;) {
      const msg = await this.recvJson(deadline - Date.now(), method);
      if (!('id' in msg)) { this.notifications.push(msg); continue; }
      if (msg.id !== id) continue;
      if (msg.error) throw new Error(`${method}: ${JSON.stringify(msg.error)}`);
      return msg.result;
    }
  }

  // The next notification named method on this connection.
  async notification(method) {
    const deadline = Date.now() + TIMEOUT_MS;
    for (;;) {
      const i = this.notifications.findIndex((n) => n.method === method);
      if (i >= 0) return this.notifications.splice(i, 1)[0];
      const msg = await this.recvJson(deadline - Date.now(), `no ${method} notification`);
      if (!('id' in msg)) this.notifications.push(msg);
    }
  }
}

// The next event on the PUB socket about document wantId: [topic, params].
async function nextEvent(sub, wantId) {
  const deadline = Date.now() + TIMEOUT_MS;
  for (;;) {
    const [topic, payload] = await sub.recv(deadline - Date.now()).catch((e) => { throw new Error(`no event: ${e.message}`); });
    const params = JSON.parse(payload.toString()).params;
    // seq counts the events of a topic; boot changes on restart. A jump
    // in seq is a lost event: read the state again (docs/PROTOCOL.md).
    if (params.id === wantId) return [topic.toString(), params];
  }
}

function check(ok, what) {
  if (!ok) throw new Error(`unexpected answer: ${JSON.stringify(what)}`);
}

async function main() {
  const endpoint = process.argv[2] ?? process.env.THERASYNC_ENDPOINT ?? 'tcp://127.0.0.1:7410';
  const events = process.argv[3] ?? process.env.THERASYNC_EVENTS ?? 'tcp://127.0.0.1:7411';
  const client = new Client(endpoint);
  const sub = new Zmtp(events, 'SUB');
  await withTimeout(sub.ready, TIMEOUT_MS, `connect ${events}`);
  // ZMTP 3.0 subscription: a message of one frame, 0x01 then the prefix.
  sub.send(Buffer.concat([Buffer.from([1]), Buffer.from('doc.sessions')]));

  console.log('ping:', await client.call('ping'));
  await new Promise((r) => setTimeout(r, 300)); // a SUB hears only what is published after it joined

  const therapist = 'thr-' + randomBytes(4).toString('hex');
  const session = { patient_id: 'pat-0001', therapist_id: therapist,
    scheduled_at: '2030-03-02T09:00:00Z', duration_min: 50,
    status: 'scheduled', modality: 'in_person', room: 'A1' };
  const created = await client.call('create', { collection: 'sessions', doc: session });
  const sid = created.doc.id;
  console.log('create:', sid, 'sync', created.sync.state);

  const [topic, ev] = await nextEvent(sub, sid);
  console.log('event:', topic, ev.origin, 'seq', ev.seq);

  const found = await client.call('query', { collection: 'sessions',
    selector: { where: { therapist_id: therapist } } });
  check(found.items.length === 1 && found.items[0].id === sid, found);
  console.log('query:', found.items.length, 'item');

  const upcoming = { therapist_id: therapist, now: '2030-01-01T00:00:00Z' };
  const live = await client.call('subscribe', { collection: 'sessions', selector: 'upcoming',
    params: upcoming });
  check(live.items.length === 1 && live.items[0].id === sid, live);
  console.log('subscribe:', live.sub, 'version', live.version);

  // a second session of the same therapist, earlier: it joins the result
  session.scheduled_at = '2030-03-01T09:00:00Z';
  const second = (await client.call('create', { collection: 'sessions', doc: session })).doc.id;
  let changed = (await client.notification('query.changed')).params;
  check(changed.sub === live.sub, changed);
  let ops = changed.ops.map((op) => [op.op, op.id]);
  check(ops.some(([op, id]) => op === 'add' && id === second), changed);
  console.log('query.changed:', JSON.stringify(ops));

  // cancelling the first takes it out of the upcoming sessions
  await client.call('update', { collection: 'sessions', id: sid, patch: { status: 'cancelled' } });
  changed = (await client.notification('query.changed')).params;
  ops = changed.ops.map((op) => [op.op, op.id]);
  check(ops.some(([op, id]) => op === 'remove' && id === sid), changed);
  console.log('query.changed:', JSON.stringify(ops));

  console.log('unsubscribe:', await client.call('unsubscribe', { sub: live.sub }));
  console.log('ok');
  client.zmtp.close();
  sub.close();
}

main().catch((e) => {
  console.error('error:', e.message);
  process.exit(1);
});
