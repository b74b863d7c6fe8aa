// The browser path: the page loads vendor/nacl-fast.min.js as a classic
// script (it sets globalThis.nacl) and the modules must use that copy.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const vendor = new URL('../static/collab/vendor/nacl-fast.min.js', import.meta.url);

test('the vendored tweetnacl is the npm package build, byte for byte', () => {
  const npm = new URL('../node_modules/tweetnacl/nacl-fast.min.js', import.meta.url);
  assert.deepEqual(readFileSync(vendor), readFileSync(npm));
});

test('the vendored qrcode-generator is the npm package file, byte for byte, with its licence', () => {
  const copy = readFileSync(new URL('../static/collab/vendor/qrcode.js', import.meta.url));
  const npm = readFileSync(new URL('../node_modules/qrcode-generator/qrcode.js', import.meta.url));
  assert.deepEqual(copy, npm);
  const pkg = JSON.parse(readFileSync(new URL('../node_modules/qrcode-generator/package.json', import.meta.url), 'utf8'));
  const licence = readFileSync(new URL('../static/collab/vendor/qrcode-generator.LICENSE', import.meta.url), 'utf8');
  assert.equal(pkg.license, 'MIT');
  assert.ok(licence.includes(`version ${pkg.version}`) && licence.includes('MIT License'));
});

test('QR codes from the vendored script, as the page loads it (a classic script)', async () => {
  const vm = await import('node:vm');
  const sandbox = {};
  vm.runInNewContext(readFileSync(new URL('../static/collab/vendor/qrcode.js', import.meta.url), 'utf8'), sandbox);
  globalThis.qrcode = sandbox.qrcode;
  try {
    const { qrMatrix, safetyQrText } = await import('../static/collab/app/qr.js');
    const text = safetyQrText(Array.from({ length: 12 }, (_, i) => String(i * 1111).padStart(5, '0')));
    assert.match(text, /^collab-safety:1:\d{60}$/);
    const m = qrMatrix(text);
    assert.ok(m.length >= 21 && m.every((row) => row.length === m.length));
    // Finder pattern in the top-left corner: a dark 7x7 ring.
    assert.ok(m[0].slice(0, 7).every(Boolean) && m[6].slice(0, 7).every(Boolean) && !m[1][1]);
    assert.throws(() => safetyQrText(['123']), TypeError);
  } finally {
    delete globalThis.qrcode;
  }
});

test('with globalThis.nacl from the classic script, the modules use it and match the vectors', () => {
  // A child process: evaluate the classic script first (as the page does),
  // then import the modules and check they picked up that global.
  const script = `
    import vm from 'node:vm';
    import { readFileSync } from 'node:fs';
    globalThis.self = globalThis;
    vm.runInThisContext(readFileSync(${JSON.stringify(fileURLToPath(vendor))}, 'utf8'));
    const marker = globalThis.nacl;
    const { default: used } = await import(${JSON.stringify(new URL('../static/collab/cr1/nacl.js', import.meta.url).href)});
    const cr1 = await import(${JSON.stringify(new URL('../static/collab/cr1/index.js', import.meta.url).href)});
    const V = JSON.parse(readFileSync(${JSON.stringify(fileURLToPath(new URL('../../collab/crypto/vectors/cr1.json', import.meta.url)))}, 'utf8'));
    const ed = V.primitives.ed25519;
    const sig = cr1.toHex(cr1.sign(cr1.fromHex(ed.seed), cr1.fromHex(ed.message)));
    console.log(JSON.stringify({ same: used === marker, sig: sig === ed.signature, random: cr1.randomBytes(8).length }));
  `;
  const out = execFileSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8' });
  assert.deepEqual(JSON.parse(out), { same: true, sig: true, random: 8 });
});
