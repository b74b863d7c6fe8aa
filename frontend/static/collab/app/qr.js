// QR codes drawn on this device (vendor/qrcode.js, the npm package
// qrcode-generator, loaded as a classic script with integrity before the
// modules): safety numbers and invitation links never leave the page to be
// drawn, and the code is pixels on a <canvas>, never markup.

export const SAFETY_QR_PREFIX = 'collab-safety:1:';

/** The text a safety-number QR code carries: "collab-safety:1:<60 digits>". */
export function safetyQrText(groups) {
  const digits = groups.join('');
  if (!/^\d{60}$/.test(digits)) throw new TypeError('a safety number is 60 digits');
  return SAFETY_QR_PREFIX + digits;
}

/** The module matrix (array of rows of booleans) of `text`, error correction M. */
export function qrMatrix(text) {
  const make = globalThis.qrcode;
  if (typeof make !== 'function') throw new Error('the QR code library is not loaded');
  const qr = make(0, 'M');
  qr.addData(text, 'Byte');
  qr.make();
  const n = qr.getModuleCount();
  const rows = [];
  for (let r = 0; r < n; r++) {
    const row = [];
    for (let c = 0; c < n; c++) row.push(qr.isDark(r, c));
    rows.push(row);
  }
  return rows;
}

/** Draw `text` as a QR code on `canvas` (4-module quiet zone), sized about `px`. */
export function drawQr(canvas, text, px = 200) {
  const rows = qrMatrix(text);
  const n = rows.length + 8;
  const cell = Math.max(2, Math.floor(px / n));
  canvas.width = n * cell;
  canvas.height = n * cell;
  const g = canvas.getContext('2d');
  g.fillStyle = '#ffffff';
  g.fillRect(0, 0, canvas.width, canvas.height);
  g.fillStyle = '#000000';
  rows.forEach((row, r) => row.forEach((dark, c) => {
    if (dark) g.fillRect((c + 4) * cell, (r + 4) * cell, cell, cell);
  }));
  canvas.dataset.qr = text;
  return canvas;
}
