// Clinical images are re-encoded before encryption: the file is decoded into an
// ImageBitmap (orientation applied), drawn on a canvas and exported as a new
// JPEG with canvas.toBlob. Only pixels survive: no EXIF, GPS, maker notes,
// comments or colour-profile tricks reach the encrypted attachment.

export const MAX_SIDE = 4096;
export const THUMB_SIDE = 320;

function fit(width, height, maxSide) {
  const scale = Math.min(1, maxSide / Math.max(width, height));
  return [Math.max(1, Math.round(width * scale)), Math.max(1, Math.round(height * scale))];
}

function toBlob(canvas, type, quality) {
  return new Promise((resolve, reject) => {
    canvas.toBlob((blob) => (blob ? resolve(blob) : reject(new Error('the image could not be encoded'))), type, quality);
  });
}

async function render(bitmap, maxSide, quality) {
  const [width, height] = fit(bitmap.width, bitmap.height, maxSide);
  const canvas = document.createElement('canvas');
  canvas.width = width;
  canvas.height = height;
  const ctx = canvas.getContext('2d', { alpha: false });
  ctx.fillStyle = '#ffffff'; // transparent areas of a PNG become white, not black
  ctx.fillRect(0, 0, width, height);
  ctx.imageSmoothingQuality = 'high';
  ctx.drawImage(bitmap, 0, 0, width, height);
  const blob = await toBlob(canvas, 'image/jpeg', quality);
  canvas.width = 0; // release the pixels
  canvas.height = 0;
  return { bytes: new Uint8Array(await blob.arrayBuffer()), mime: 'image/jpeg', width, height };
}

/** {full, thumbnail}: each {bytes, mime, width, height}. Throws on a non-image. */
export async function sanitiseImage(file) {
  let bitmap;
  try {
    bitmap = await createImageBitmap(file, { imageOrientation: 'from-image' });
  } catch {
    throw new Error('This file is not an image the browser can read (use JPEG, PNG, WebP or GIF).');
  }
  try {
    const full = await render(bitmap, MAX_SIDE, 0.92);
    const thumbnail = await render(bitmap, THUMB_SIDE, 0.8);
    return { full, thumbnail };
  } finally {
    bitmap.close();
  }
}
