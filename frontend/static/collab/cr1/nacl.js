// tweetnacl, loaded once. In the browser the page loads
// /static/collab/vendor/nacl-fast.min.js as a classic script before any
// module (it sets globalThis.nacl); in node the npm package is imported.
// tweetnacl is UMD/CommonJS, so it cannot be imported by URL as a module.

let nacl = globalThis.nacl;
if (!nacl) {
  try {
    nacl = (await import('tweetnacl')).default;
  } catch (err) {
    throw new Error('CR1 needs tweetnacl: load vendor/nacl-fast.min.js before the modules', { cause: err });
  }
}

export default nacl;
