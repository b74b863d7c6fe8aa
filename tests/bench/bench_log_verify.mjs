// Benchmark: the browser's CaseSession loading a log of N single additions, before and
// after the verified head (the browser twin of bench_log_verify.py).
//
//     node tests/bench/bench_log_verify.mjs [N]      (default 100; tweetnacl verifies slowly)
//
// One user adds N devices one add_device entry at a time (entry e carries e + 1
// devices). "before": every entry verified from genesis (each roster's certificates
// again); "after": the entries taken by their hash links to the kept head; "one new":
// the kept head at N - 1. Prints figures only; nothing is asserted.
import * as cr1 from '../../frontend/static/collab/cr1/index.js';
import { CaseSession } from '../../frontend/static/collab/app/casestate.js';

const n = Number(process.argv[2] ?? 100);
const userId = cr1.randomUuid(cr1.randomBytes);
const uikSeed = cr1.randomBytes(32);
const newDevice = () => {
  const deviceId = cr1.randomUuid(cr1.randomBytes);
  const dskSeed = cr1.randomBytes(32);
  const dxkSecret = cr1.randomBytes(32);
  const cert = cr1.makeDeviceCert(uikSeed, userId, deviceId, cr1.ed25519Public(dskSeed),
    cr1.x25519Public(dxkSecret), 1);
  return { deviceId, dskSeed, dxkSecret, cert };
};

async function buildChain() {
  const first = newDevice();
  const caseId = cr1.randomUuid(cr1.randomBytes);
  const { entry: genesis } = await cr1.buildEntry(null, new cr1.CreateBody(cr1.ed25519Public(uikSeed), [first.cert]), {
    signer: first.dskSeed, authorUserId: userId, authorDeviceId: first.deviceId, createdMs: 1, caseId,
  });
  const chain = [genesis];
  const filler = new Uint8Array(genesis.wraps[0].ciphertext.length);
  for (let i = 0; i < n; i++) {
    const prev = chain.at(-1);
    const body = new cr1.AddDeviceBody(newDevice().cert);
    const epoch = i + 1;
    const roster = cr1.applyAction(prev.roster, { epoch, authorUserId: userId, body });
    const epochKey = cr1.randomBytes(32);
    const epkSecret = cr1.randomBytes(32);
    const epk = cr1.x25519Public(epkSecret);
    const prevHash = prev.entryHash();
    // Only the reading device's wrap is real; the rest are well-formed filler, which
    // verification checks by count and length only, as for any device.
    const wraps = roster.devices.map((d) => new cr1.Wrap(d.deviceId, d.deviceId === first.deviceId
      ? cr1.boxSeal(epkSecret, d.dxkPub, cr1.wrapNonce(epk, d.deviceId, epoch),
        cr1.wrapPlaintext(caseId, epoch, prevHash, d.deviceId, epochKey))
      : filler));
    const unsigned = genesis.replace({
      epoch, prevHash, createdMs: epoch + 1, action: cr1.actionFor(body), actionBody: body.encode(),
      roster, keyCommit: cr1.keyCommit(epochKey, caseId, epoch), epk, wraps,
    });
    chain.push(unsigned.replace({ signature: cr1.sign(first.dskSeed, unsigned.signedBytes()) }));
  }
  return { chain, first, caseId };
}

function session(caseId, first) {
  return new CaseSession(caseId, {
    userId, deviceId: first.deviceId, signer: first.dskSeed, dxkSecret: first.dxkSecret,
  });
}

function measure(label, run) {
  const start = performance.now();
  const cpu = process.cpuUsage();
  run();
  const used = process.cpuUsage(cpu);
  const seconds = ((performance.now() - start) / 1000).toFixed(3).padStart(9);
  // CPU seconds too: on a shared machine the wall clock says more about the neighbours.
  console.log(`${label.padEnd(34)} ${seconds} s (${((used.user + used.system) / 1e6).toFixed(3).padStart(8)} s CPU)`);
}

const built = performance.now();
const { chain, first, caseId } = await buildChain();
console.log(`built genesis + ${n} add_device entries in ${((performance.now() - built) / 1000).toFixed(1)} s`);
const decoded = chain.map((e) => cr1.LogEntry.decode(e.encode()));
const head = { epoch: n, hash: chain[n].entryHash() };
const beforeHead = { epoch: n - 1, hash: chain[n - 1].entryHash() };
const certs = (n + 1) * (n + 2) / 2;
console.log(`(before: about ${certs.toLocaleString('en')} certificate signatures over all rosters)`);
measure('before: every entry verified', () => session(caseId, first).accept(decoded));
measure('after: a later load (kept head)', () => session(caseId, first).accept(decoded, { verified: head }));
measure('after: one new entry on the head', () => session(caseId, first).accept(decoded, { verified: beforeHead }));
