// Loaded into every node process in the bottle (NODE_OPTIONS=--require ...): Node's built-in
// fetch ignores HTTP(S)_PROXY, so without this a node script cannot reach even the hosts its
// bottle allows. undici's EnvHttpProxyAgent reads HTTP_PROXY, HTTPS_PROXY and NO_PROXY as curl
// does; installing it as the global dispatcher covers fetch() and undici's own request().
// A failure here must never break node: it only warns.
"use strict";
try {
  const { setGlobalDispatcher, EnvHttpProxyAgent } = require("/opt/bottle/node/node_modules/undici");
  if (process.env.HTTPS_PROXY || process.env.HTTP_PROXY || process.env.https_proxy || process.env.http_proxy) {
    setGlobalDispatcher(new EnvHttpProxyAgent());
  }
} catch (err) {
  process.emitWarning(`bottle: fetch() will not use the egress proxy: ${err && err.message}`);
}
