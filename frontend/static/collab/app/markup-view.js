// The marking editor shown after a picture is chosen and before it is sent, and
// how a received marked image is described. The rules (validation, filters,
// drawing order) are in markup.js; this module only handles the page: tools,
// pointer and keyboard input, undo, reset, cancel, the note and the "also send
// the original" choice. Keyboard: with the picture focused, arrow keys move the
// cursor (Shift: ten times further), Enter or Space sets the start and then the
// end of a mark (a label is placed at once), Escape drops a started mark.

import { $, h, replace, say } from './dom.js';
import { MAX_SIDE, sanitiseImage } from './images.js';
import {
  checkMarks, checkNote, describeMark, imageFields, markFromPoints, readMarking, renderMarked,
} from './markup.js';

const TOOL_NAMES = { arrow: 'Arrow', circle: 'Circle', label: 'Text label', blur: 'Blur region', pixelate: 'Pixelate region' };

function toBlob(canvas) {
  return new Promise((resolve, reject) => {
    canvas.toBlob((blob) => (blob ? resolve(blob) : reject(new Error('the marked image could not be encoded'))), 'image/png');
  });
}

export class MarkupView {
  /** `onCancel` runs when the person cancels (the page forgets the chosen file). */
  constructor({ onCancel = () => {} } = {}) {
    this.root = $('#markup');
    this.canvas = $('#markup-canvas');
    this.ctx = this.canvas.getContext('2d', { alpha: false, willReadFrequently: true });
    this.status = $('#markup-status');
    this.onCancel = onCancel;
    this.file = null;
    this.bitmap = null;
    this.marks = [];
    this.start = null; // the first point of a mark being made
    this.cursor = { x: 0, y: 0 };
    this.committed = document.createElement('canvas'); // the picture with every mark, for previews
    this.wire();
  }

  get tool() {
    return this.root.querySelector('input[name="markup-tool"]:checked')?.value ?? 'arrow';
  }

  wire() {
    $('#markup-undo').addEventListener('click', () => this.undo());
    $('#markup-reset').addEventListener('click', () => this.reset());
    $('#markup-cancel').addEventListener('click', () => this.cancel());
    const c = this.canvas;
    c.addEventListener('pointerdown', (ev) => {
      if (!this.bitmap || ev.button !== 0) return;
      c.setPointerCapture(ev.pointerId);
      this.start = this.point(ev);
      this.cursor = this.start;
    });
    c.addEventListener('pointermove', (ev) => {
      if (!this.bitmap || !this.start) return;
      this.cursor = this.point(ev);
      this.preview();
    });
    c.addEventListener('pointerup', (ev) => {
      if (!this.bitmap || !this.start) return;
      this.cursor = this.point(ev);
      this.finish();
    });
    c.addEventListener('keydown', (ev) => this.key(ev));
    c.addEventListener('focus', () => this.preview());
    c.addEventListener('blur', () => this.preview());
  }

  /** A pointer position in image pixels (the canvas is scaled down to fit the page). */
  point(ev) {
    const c = this.canvas;
    const rect = c.getBoundingClientRect(); // the border box: the picture starts inside the border
    const clamp = (v, max) => Math.min(max - 1, Math.max(0, Math.floor(v)));
    return {
      x: clamp(((ev.clientX - rect.left - c.clientLeft) / c.clientWidth) * c.width, c.width),
      y: clamp(((ev.clientY - rect.top - c.clientTop) / c.clientHeight) * c.height, c.height),
    };
  }

  key(ev) {
    if (!this.bitmap) return;
    const step = Math.max(1, Math.round(Math.max(this.canvas.width, this.canvas.height) / 100)) * (ev.shiftKey ? 10 : 1);
    const moves = { ArrowLeft: [-step, 0], ArrowRight: [step, 0], ArrowUp: [0, -step], ArrowDown: [0, step] };
    if (moves[ev.key]) {
      const [dx, dy] = moves[ev.key];
      this.cursor = {
        x: Math.min(this.canvas.width - 1, Math.max(0, this.cursor.x + dx)),
        y: Math.min(this.canvas.height - 1, Math.max(0, this.cursor.y + dy)),
      };
      $('#markup-pos').textContent = `Cursor at ${this.cursor.x}, ${this.cursor.y}${this.start ? ` (mark starts at ${this.start.x}, ${this.start.y})` : ''}`;
      this.preview();
    } else if (ev.key === 'Enter' || ev.key === ' ') {
      if (this.start || this.tool === 'label') this.finish(this.start ?? this.cursor);
      else {
        this.start = { ...this.cursor };
        say(this.status, `${TOOL_NAMES[this.tool]} starts at ${this.start.x}, ${this.start.y}: move the cursor and press Enter again.`);
      }
    } else if (ev.key === 'Escape' && this.start) {
      this.start = null;
      say(this.status, 'Mark dropped.');
      this.preview();
    } else {
      return;
    }
    ev.preventDefault();
    ev.stopPropagation(); // Escape must not close a surrounding dialog
  }

  /** Show the editor for `file`: the picture oriented and fitted as it will be sent. */
  async open(file) {
    this.close();
    if (!file) return;
    let bitmap;
    try {
      bitmap = await createImageBitmap(file, { imageOrientation: 'from-image' });
    } catch {
      throw new Error('This file is not an image the browser can read (use JPEG, PNG, WebP or GIF).');
    }
    const scale = Math.min(1, MAX_SIDE / Math.max(bitmap.width, bitmap.height));
    this.canvas.width = this.committed.width = Math.max(1, Math.round(bitmap.width * scale));
    this.canvas.height = this.committed.height = Math.max(1, Math.round(bitmap.height * scale));
    this.file = file;
    this.bitmap = bitmap;
    this.cursor = { x: Math.floor(this.canvas.width / 2), y: Math.floor(this.canvas.height / 2) };
    this.canvas.setAttribute('aria-label', `The picture to mark, ${this.canvas.width}x${this.canvas.height} pixels. `
      + 'Drag with the chosen tool, or use the arrow keys and Enter.');
    $('#markup-note').value = '';
    $('#markup-original').checked = false;
    this.root.hidden = false;
    this.redraw();
    say(this.status, 'Mark the picture if needed, then send it. Nothing is sent until you press Send image.');
  }

  /** Hide the editor and forget the picture and its marks. */
  close() {
    this.bitmap?.close();
    this.bitmap = null;
    this.file = null;
    this.marks = [];
    this.start = null;
    this.canvas.width = this.committed.width = 0;
    this.canvas.height = this.committed.height = 0;
    replace($('#markup-list'));
    this.root.hidden = true;
  }

  /** Made for `file` and still open (the page falls back to plain sending otherwise). */
  isFor(file) {
    return Boolean(this.bitmap) && this.file === file;
  }

  finish(start = this.start) {
    const end = this.cursor;
    this.start = null;
    const text = $('#markup-label-text').value.trim();
    const mark = markFromPoints(this.tool, start, end, text);
    try {
      checkMarks([...this.marks, mark], this.canvas.width, this.canvas.height);
    } catch (err) {
      say(this.status, `Not added: ${err.message}.`, 'error');
      this.preview();
      return;
    }
    this.marks.push(mark);
    this.redraw();
    say(this.status, `Added: ${describeMark(mark)}.`);
  }

  undo() {
    const last = this.marks.pop();
    this.redraw();
    say(this.status, last ? `Undone: ${describeMark(last)}.` : 'Nothing to undo.');
  }

  reset() {
    this.marks = [];
    this.redraw();
    say(this.status, 'All marks removed.');
  }

  cancel() {
    this.close();
    this.onCancel();
  }

  redraw() {
    if (!this.bitmap) return;
    renderMarked(this.committed.getContext('2d', { alpha: false, willReadFrequently: true }), this.bitmap, this.marks);
    replace($('#markup-list'), ...this.marks.map((m) => h('li', {}, describeMark(m))));
    $('#markup-undo').disabled = !this.marks.length;
    $('#markup-reset').disabled = !this.marks.length;
    this.preview();
  }

  /** The marked picture, the mark being made as an outline, and the keyboard cursor. */
  preview() {
    if (!this.bitmap) return;
    const ctx = this.ctx;
    ctx.drawImage(this.committed, 0, 0);
    const lw = Math.max(1, Math.round(Math.max(this.canvas.width, this.canvas.height) / 400));
    ctx.save();
    ctx.lineWidth = lw;
    ctx.strokeStyle = '#00e5ff';
    ctx.setLineDash([4 * lw, 3 * lw]);
    if (this.start) {
      const m = markFromPoints(this.tool === 'label' ? 'arrow' : this.tool, this.start, this.cursor);
      ctx.beginPath();
      if (m.kind === 'circle') ctx.arc(m.x, m.y, Math.max(1, m.r), 0, 2 * Math.PI);
      else if (m.kind === 'arrow') { ctx.moveTo(m.x1, m.y1); ctx.lineTo(m.x2, m.y2); } else ctx.rect(m.x, m.y, m.w, m.h);
      ctx.stroke();
    }
    if (document.activeElement === this.canvas) {
      const r = 6 * lw;
      ctx.setLineDash([]);
      ctx.beginPath();
      ctx.moveTo(this.cursor.x - r, this.cursor.y);
      ctx.lineTo(this.cursor.x + r, this.cursor.y);
      ctx.moveTo(this.cursor.x, this.cursor.y - r);
      ctx.lineTo(this.cursor.x, this.cursor.y + r);
      ctx.stroke();
    }
    ctx.restore();
  }

  /** What the page uploads: {clean, original, fields}. The marked canvas (PNG, lossless)
   * goes through the usual sanitising re-encode; the original only when asked for. */
  async prepare(file) {
    const note = checkNote($('#markup-note').value);
    if (!this.isFor(file) || !this.marks.length) {
      return { clean: await sanitiseImage(file), original: null, fields: imageFields({ marked: false, note }) };
    }
    const marked = document.createElement('canvas');
    marked.width = this.canvas.width;
    marked.height = this.canvas.height;
    renderMarked(marked.getContext('2d', { alpha: false, willReadFrequently: true }), this.bitmap, this.marks);
    const blob = await toBlob(marked);
    marked.width = 0;
    marked.height = 0;
    const clean = await sanitiseImage(blob);
    const original = $('#markup-original').checked ? await sanitiseImage(file) : null;
    return { clean, original, fields: imageFields({ marked: true, note, originalIndex: original ? 2 : null }) };
  }
}

/** Add "Marked", the note and a "Show original" action to a received image's figure. */
export function describeMarked(figure, image, manifests, open) {
  const { marked, note, original } = readMarking(image, manifests);
  const caption = figure.querySelector('figcaption');
  if (marked) caption.prepend(h('span', { class: 'badge marked' }, 'Marked'), ' ');
  if (note) figure.append(h('p', { class: 'image-note' }, `Note: ${note}`));
  if (original) {
    caption.append(' · ', h('button', { type: 'button', class: 'link', onclick: () => open(original) }, 'Show original'));
  }
  return figure;
}
