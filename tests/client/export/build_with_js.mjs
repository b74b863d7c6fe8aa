// Builds the Bundle and the HTML page of a model file with the browser's modules:
// node build_with_js.mjs model.json > out.json ({bundle, html}).
import { readFileSync } from 'node:fs';

import { buildBundle } from '../../../frontend/static/collab/app/export-fhir.js';
import { buildHtml } from '../../../frontend/static/collab/app/export-html.js';

const model = JSON.parse(readFileSync(process.argv[2], 'utf8'));
for (const m of model.messages) {
  for (const image of m.images) image.data = Uint8Array.from(Buffer.from(image.data, 'base64'));
}
const bundle = await buildBundle(model);
process.stdout.write(JSON.stringify({ bundle, html: buildHtml(model) }));
