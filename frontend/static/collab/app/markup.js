// Image marking before encryption: arrows, circles, text labels, blurred and
// pixelated regions, a size/measurement note. The same rules and error codes as
// collab/client/markup.py: coordinates are whole pixels of the picture as shown
// (orientation applied), regions are blurred or pixelated first and the drawings
// go on top, and bad marks are refused with `bad_mark` (`bad_note` for the note).
// The marked canvas is what images.js re-encodes (metadata stripping unchanged)
// and what is encrypted. Region filters work on ImageData in plain JS (no canvas
// filter), so they behave the same in every browser and under `node --test`.

export const MAX_MARKS = 64;
export const MAX_LABEL_CHARS = 120;
export const MAX_NOTE_CHARS = 500;
export const MIN_REGION = 2;
export const COLOUR = [255, 214, 0]; // yellow with a dark outline, as in the SDK
export const OUTLINE = [0, 0, 0];
export const KINDS = ['arrow', 'circle', 'label', 'blur', 'pixelate'];
const REGIONS = new Set(['blur', 'pixelate']);
const CONTROLS = /[\u0000-\u001f\u007f-\u009f\u200e\u200f\u202a-\u202e\u2066-\u2069]/;

export class MarkupError extends Error {
  constructor(code, message) {
    super(message);
    this.name = 'MarkupError';
    this.code = code;
  }
}

const bad = (message) => new MarkupError('bad_mark', message);

function whole(value, what) {
  if (typeof value !== 'number' || !Number.isInteger(value)) throw bad(`${what} must be a whole number of pixels, got ${value}`);
  if (value < 0) throw bad(`${what} must not be negative, got ${value}`);
  return value;
}

/** Throws MarkupError('bad_mark') unless every mark lies on a width x height picture. */
export function checkMarks(marks, width, height) {
  if (!Array.isArray(marks)) throw bad('marks must be a list');
  if (marks.length > MAX_MARKS) throw bad(`at most ${MAX_MARKS} marks, got ${marks.length}`);
  const size = `the ${width}x${height} image (x 0..${width - 1}, y 0..${height - 1})`;
  const inside = (x, y, what) => {
    if (x >= width || y >= height) throw bad(`${what} (${x},${y}) lies outside ${size}`);
  };
  marks.forEach((m, i) => {
    const name = `mark ${i + 1} (${m?.kind})`;
    if (REGIONS.has(m?.kind)) {
      const [x, y, w, h] = [whole(m.x, `${name} x`), whole(m.y, `${name} y`), whole(m.w, `${name} width`), whole(m.h, `${name} height`)];
      if (w < MIN_REGION || h < MIN_REGION) throw bad(`${name} must be at least ${MIN_REGION}x${MIN_REGION} pixels, got ${w}x${h}`);
      if (x + w > width || y + h > height) throw bad(`${name} ${x},${y},${w},${h} does not fit ${size}`);
    } else if (m?.kind === 'arrow') {
      inside(whole(m.x1, `${name} x1`), whole(m.y1, `${name} y1`), `${name} tail`);
      inside(whole(m.x2, `${name} x2`), whole(m.y2, `${name} y2`), `${name} head`);
      if (m.x1 === m.x2 && m.y1 === m.y2) throw bad(`${name} starts and ends at the same point`);
    } else if (m?.kind === 'circle') {
      inside(whole(m.x, `${name} x`), whole(m.y, `${name} y`), `${name} centre`);
      const r = whole(m.r, `${name} radius`);
      if (r < MIN_REGION || r > Math.max(width, height)) throw bad(`${name} radius must be ${MIN_REGION}..${Math.max(width, height)}, got ${r}`);
    } else if (m?.kind === 'label') {
      inside(whole(m.x, `${name} x`), whole(m.y, `${name} y`), `${name} position`);
      if (typeof m.text !== 'string' || !m.text.trim()) throw bad(`${name} has no text`);
      if (m.text.length > MAX_LABEL_CHARS || CONTROLS.test(m.text)) throw bad(`${name} text must be one line of at most ${MAX_LABEL_CHARS} characters`);
    } else {
      throw bad(`${name} is not a mark (use ${KINDS.join(', ')})`);
    }
  });
}

/** The note, trimmed; throws MarkupError('bad_note') for more than one line or too long. */
export function checkNote(note) {
  if (typeof note !== 'string') throw new MarkupError('bad_note', 'the note must be text');
  const trimmed = note.trim();
  if (trimmed.length > MAX_NOTE_CHARS || CONTROLS.test(trimmed)) {
    throw new MarkupError('bad_note', `the note must be one line of at most ${MAX_NOTE_CHARS} characters`);
  }
  return trimmed;
}

/** The mark a tool makes from a start and an end point (a drag, or two key presses). */
export function markFromPoints(kind, start, end, text = '') {
  const [x1, y1, x2, y2] = [start.x, start.y, end.x, end.y].map(Math.round);
  if (kind === 'arrow') return { kind, x1, y1, x2, y2 };
  if (kind === 'circle') return { kind, x: x1, y: y1, r: Math.round(Math.hypot(x2 - x1, y2 - y1)) };
  if (kind === 'label') return { kind, x: x2, y: y2, text };
  if (REGIONS.has(kind)) return { kind, x: Math.min(x1, x2), y: Math.min(y1, y2), w: Math.abs(x2 - x1), h: Math.abs(y2 - y1) };
  throw bad(`unknown tool ${kind}`);
}

/** One line for the list of marks (what a screen reader hears). */
export function describeMark(m) {
  if (m.kind === 'arrow') return `Arrow from ${m.x1},${m.y1} to ${m.x2},${m.y2}`;
  if (m.kind === 'circle') return `Circle at ${m.x},${m.y}, radius ${m.r}`;
  if (m.kind === 'label') return `Label “${m.text}” at ${m.x},${m.y}`;
  return `${m.kind === 'blur' ? 'Blurred' : 'Pixelated'} region ${m.x},${m.y}, ${m.w}x${m.h}`;
}

/** Pixelate block (and blur sampling) size: about six blocks across the short side, at least 8 px. */
export function blockSize(w, h) {
  return Math.max(8, Math.ceil(Math.min(w, h) / 6));
}

export function strokeWidth(width, height) {
  return Math.max(2, Math.round(Math.max(width, height) / 250));
}

/** Mean RGBA of each block x block cell of an ImageData-like {data, width, height}. */
function cells(img, block) {
  const cw = Math.ceil(img.width / block);
  const ch = Math.ceil(img.height / block);
  const means = new Float64Array(cw * ch * 4);
  for (let cy = 0; cy < ch; cy += 1) {
    for (let cx = 0; cx < cw; cx += 1) {
      const sum = [0, 0, 0, 0];
      let n = 0;
      for (let y = cy * block; y < Math.min(img.height, (cy + 1) * block); y += 1) {
        for (let x = cx * block; x < Math.min(img.width, (cx + 1) * block); x += 1) {
          const p = (y * img.width + x) * 4;
          for (let c = 0; c < 4; c += 1) sum[c] += img.data[p + c];
          n += 1;
        }
      }
      for (let c = 0; c < 4; c += 1) means[(cy * cw + cx) * 4 + c] = sum[c] / n;
    }
  }
  return { means, cw, ch };
}

/** Every block becomes its mean colour (in place). */
export function pixelateRegion(img) {
  const block = blockSize(img.width, img.height);
  const { means, cw } = cells(img, block);
  for (let y = 0; y < img.height; y += 1) {
    for (let x = 0; x < img.width; x += 1) {
      const q = (Math.floor(y / block) * cw + Math.floor(x / block)) * 4;
      const p = (y * img.width + x) * 4;
      for (let c = 0; c < 4; c += 1) img.data[p + c] = Math.round(means[q + c]);
    }
  }
  return img;
}

/** Down to a few samples, then a smooth (bilinear) fill between them: what is left
 * cannot be sharpened back into a face (in place). */
export function blurRegion(img) {
  const block = blockSize(img.width, img.height);
  const { means, cw, ch } = cells(img, block);
  const at = (cx, cy, c) => means[(Math.min(ch - 1, Math.max(0, cy)) * cw + Math.min(cw - 1, Math.max(0, cx))) * 4 + c];
  for (let y = 0; y < img.height; y += 1) {
    const fy = (y + 0.5) / block - 0.5;
    const y0 = Math.floor(fy);
    const ty = fy - y0;
    for (let x = 0; x < img.width; x += 1) {
      const fx = (x + 0.5) / block - 0.5;
      const x0 = Math.floor(fx);
      const tx = fx - x0;
      const p = (y * img.width + x) * 4;
      for (let c = 0; c < 4; c += 1) {
        const top = at(x0, y0, c) * (1 - tx) + at(x0 + 1, y0, c) * tx;
        const bottom = at(x0, y0 + 1, c) * (1 - tx) + at(x0 + 1, y0 + 1, c) * tx;
        img.data[p + c] = Math.round(top * (1 - ty) + bottom * ty);
      }
    }
  }
  return img;
}

const rgb = ([r, g, b]) => `rgb(${r}, ${g}, ${b})`;

function drawArrow(ctx, m, lw) {
  const length = Math.hypot(m.x2 - m.x1, m.y2 - m.y1);
  const head = Math.min(Math.max(12, lw * 5), length * 0.6);
  const angle = Math.atan2(m.y2 - m.y1, m.x2 - m.x1);
  for (const [colour, extra] of [[OUTLINE, 2], [COLOUR, 0]]) {
    ctx.strokeStyle = rgb(colour);
    ctx.fillStyle = rgb(colour);
    ctx.lineWidth = lw + extra;
    ctx.beginPath();
    ctx.moveTo(m.x1, m.y1);
    ctx.lineTo(m.x2, m.y2);
    ctx.stroke();
    ctx.beginPath();
    ctx.moveTo(m.x2, m.y2);
    for (const s of [0.45, -0.45]) ctx.lineTo(m.x2 - head * Math.cos(angle + s), m.y2 - head * Math.sin(angle + s));
    ctx.closePath();
    ctx.fill();
    if (extra) ctx.stroke();
  }
}

/** Draw `source` (a bitmap or canvas) on ctx's canvas, then the marks: regions first,
 * then arrows, circles and labels. Checks the marks first (throws bad_mark). */
export function renderMarked(ctx, source, marks) {
  const { width, height } = ctx.canvas;
  checkMarks(marks, width, height);
  ctx.save();
  ctx.fillStyle = '#ffffff';
  ctx.fillRect(0, 0, width, height);
  ctx.drawImage(source, 0, 0, width, height);
  for (const m of marks) {
    if (!REGIONS.has(m.kind)) continue;
    const region = ctx.getImageData(m.x, m.y, m.w, m.h);
    ctx.putImageData(m.kind === 'blur' ? blurRegion(region) : pixelateRegion(region), m.x, m.y);
  }
  const lw = strokeWidth(width, height);
  ctx.lineCap = 'round';
  ctx.lineJoin = 'round';
  for (const m of marks) {
    if (m.kind === 'arrow') drawArrow(ctx, m, lw);
    else if (m.kind === 'circle') {
      for (const [colour, extra] of [[OUTLINE, 2], [COLOUR, 0]]) {
        ctx.strokeStyle = rgb(colour);
        ctx.lineWidth = lw + extra;
        ctx.beginPath();
        ctx.arc(m.x, m.y, m.r, 0, 2 * Math.PI);
        ctx.stroke();
      }
    } else if (m.kind === 'label') {
      ctx.font = `bold ${Math.max(14, Math.round(Math.max(width, height) / 30))}px sans-serif`;
      ctx.textBaseline = 'top';
      ctx.lineWidth = 2 * (Math.floor(lw / 2) + 1);
      ctx.strokeStyle = rgb(OUTLINE);
      ctx.strokeText(m.text, m.x, m.y);
      ctx.fillStyle = rgb(COLOUR);
      ctx.fillText(m.text, m.x, m.y);
    }
  }
  ctx.restore();
}

/** The body's image fields beyond full/thumbnail (content-types.md, `image`). */
export function imageFields({ marked, note, originalIndex }) {
  const fields = {};
  if (marked) fields.marked = true;
  if (note) fields.note = note;
  if (marked && Number.isInteger(originalIndex)) fields.original = originalIndex;
  return fields;
}

/** What a receiver shows of a marked image: {marked, note, original manifest or null}. */
export function readMarking(image, manifests) {
  const note = typeof image?.note === 'string' ? image.note : '';
  const index = image?.original;
  const original = Number.isInteger(index) && index >= 0 && index !== image.full ? manifests[index] ?? null : null;
  return { marked: image?.marked === true, note, original };
}
