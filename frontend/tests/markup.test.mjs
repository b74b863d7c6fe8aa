// Image marking rules (app/markup.js), the same as collab/client/markup.py: pixelated
// blocks are uniform, a blurred region loses its variance, bad marks are refused with
// bad_mark, and a receiver reads the marking fields defensively.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import {
  MAX_LABEL_CHARS, MAX_MARKS, MAX_NOTE_CHARS, MarkupError, blockSize, blurRegion, checkMarks, checkNote,
  describeMark, imageFields, markFromPoints, pixelateRegion, readMarking,
} from '../static/collab/app/markup.js';

function noise(width, height, seed = 7) {
  let state = seed;
  const data = new Uint8ClampedArray(width * height * 4);
  for (let i = 0; i < data.length; i += 1) {
    state = (state * 1103515245 + 12345) % 2147483648;
    data[i] = (i % 4 === 3) ? 255 : (state >> 16) & 255;
  }
  return { data, width, height };
}

function variance(img) {
  let worst = 0;
  for (let c = 0; c < 3; c += 1) {
    let sum = 0;
    let sq = 0;
    const n = img.width * img.height;
    for (let p = 0; p < n; p += 1) {
      const v = img.data[p * 4 + c];
      sum += v;
      sq += v * v;
    }
    worst = Math.max(worst, sq / n - (sum / n) ** 2);
  }
  return worst;
}

test('pixelate makes every block one colour, and neighbouring blocks differ', () => {
  const img = noise(120, 96);
  const block = blockSize(120, 96);
  assert.equal(block, 16);
  pixelateRegion(img);
  for (let by = 0; by + block <= 96; by += block) {
    for (let bx = 0; bx + block <= 120; bx += block) {
      const first = [...img.data.slice((by * 120 + bx) * 4, (by * 120 + bx) * 4 + 4)];
      for (let y = by; y < by + block; y += 1) {
        for (let x = bx; x < bx + block; x += 1) {
          assert.deepEqual([...img.data.slice((y * 120 + x) * 4, (y * 120 + x) * 4 + 4)], first, `${x},${y}`);
        }
      }
    }
  }
  assert.notDeepEqual([...img.data.slice(0, 3)], [...img.data.slice(block * 4, block * 4 + 3)]);
});

test('blur drops the variance of a noisy region by far', () => {
  const img = noise(100, 80);
  const before = variance(img);
  blurRegion(img);
  assert.ok(before > 4000, `noise variance ${before}`);
  assert.ok(variance(img) < before / 20, `blurred variance ${variance(img)}`);
});

test('marks from points: regions normalised, circles by radius, labels at the end point', () => {
  assert.deepEqual(markFromPoints('blur', { x: 50, y: 40 }, { x: 10, y: 10 }), { kind: 'blur', x: 10, y: 10, w: 40, h: 30 });
  assert.deepEqual(markFromPoints('circle', { x: 10, y: 10 }, { x: 13, y: 14 }), { kind: 'circle', x: 10, y: 10, r: 5 });
  assert.deepEqual(markFromPoints('label', { x: 1, y: 2 }, { x: 3, y: 4 }, '2 cm'), { kind: 'label', x: 3, y: 4, text: '2 cm' });
  assert.equal(describeMark({ kind: 'pixelate', x: 1, y: 2, w: 3, h: 4 }), 'Pixelated region 1,2, 3x4');
  checkMarks([
    { kind: 'arrow', x1: 0, y1: 0, x2: 199, y2: 149 }, { kind: 'circle', x: 5, y: 5, r: 200 },
    { kind: 'label', x: 0, y: 0, text: 'x' }, { kind: 'blur', x: 0, y: 0, w: 200, h: 150 },
  ], 200, 150);
});

const BAD = [
  [[{ kind: 'blur', x: 190, y: 0, w: 20, h: 20 }], 'does not fit'],
  [[{ kind: 'pixelate', x: 0, y: 140, w: 10, h: 11 }], 'does not fit'],
  [[{ kind: 'blur', x: -1, y: 0, w: 10, h: 10 }], 'must not be negative'],
  [[{ kind: 'blur', x: 0, y: 0, w: 0, h: 10 }], 'at least 2x2'],
  [[{ kind: 'arrow', x1: 10, y1: 10, x2: 10, y2: 10 }], 'same point'],
  [[{ kind: 'arrow', x1: 10, y1: 10, x2: 200, y2: 10 }], 'outside the 200x150 image'],
  [[{ kind: 'circle', x: 50, y: 50, r: 1 }], 'radius'],
  [[{ kind: 'label', x: 5, y: 5, text: '  ' }], 'no text'],
  [[{ kind: 'label', x: 5, y: 5, text: 'two\nlines' }], 'one line'],
  [[{ kind: 'label', x: 5, y: 5, text: 'x'.repeat(MAX_LABEL_CHARS + 1) }], 'one line'],
  [[{ kind: 'blur', x: 1.5, y: 0, w: 10, h: 10 }], 'whole number'],
  [[{ kind: 'blur', x: '1', y: 0, w: 10, h: 10 }], 'whole number'],
  [Array(MAX_MARKS + 1).fill({ kind: 'blur', x: 0, y: 0, w: 4, h: 4 }), `at most ${MAX_MARKS}`],
  [[{ kind: 'smudge' }], 'is not a mark'],
];

test('bad marks are refused with bad_mark and a message that says why', () => {
  for (const [marks, needle] of BAD) {
    assert.throws(() => checkMarks(marks, 200, 150), (err) => err instanceof MarkupError
      && err.code === 'bad_mark' && err.message.includes(needle), needle);
  }
});

test('the note is one trimmed line of at most 500 characters', () => {
  assert.equal(checkNote('  12 x 8 mm '), '12 x 8 mm');
  for (const note of ['x'.repeat(MAX_NOTE_CHARS + 1), 'a\nb', 42]) {
    assert.throws(() => checkNote(note), (err) => err.code === 'bad_note');
  }
});

test('body fields: marked only as true, original only with marked', () => {
  assert.deepEqual(imageFields({ marked: false, note: '' }), {});
  assert.deepEqual(imageFields({ marked: false, note: 'n', originalIndex: 2 }), { note: 'n' });
  assert.deepEqual(imageFields({ marked: true, note: 'n', originalIndex: 2 }), { marked: true, note: 'n', original: 2 });
});

test('a receiver reads the marking fields defensively', () => {
  const manifests = ['full', 'thumb', 'orig'];
  assert.deepEqual(readMarking({ full: 0, thumbnail: 1, original: 2, marked: true, note: 'ruler' }, manifests),
    { marked: true, note: 'ruler', original: 'orig' });
  for (const image of [{ full: 0, original: 9 }, { full: 0, original: '2' }, { full: 0, original: 0 }, { full: 0, original: -1 }]) {
    assert.equal(readMarking(image, manifests).original, null, JSON.stringify(image));
  }
  assert.deepEqual(readMarking({ full: 0, marked: 'yes', note: { x: 1 } }, manifests), { marked: false, note: '', original: null });
});
