// An independent OIDC server for the tests: npm's oauth2-mock-server, laid out like one
// Keycloak realm. Prints {"url": ...} once listening. Token requests may carry a `claims`
// form field (JSON) merged into the token; POST /control/rotate adds a signing key (the
// server then signs with its keys in turn).
import { OAuth2Server } from 'oauth2-mock-server';

const realm = process.argv[2] || 'byok';
const base = `/realms/${realm}`;
const server = new OAuth2Server(undefined, undefined, {
  endpoints: {
    wellKnownDocument: `${base}/.well-known/openid-configuration`,
    token: `${base}/protocol/openid-connect/token`,
    jwks: `${base}/protocol/openid-connect/certs`,
  },
});
await server.issuer.keys.generate('RS256');
server.service.on('beforeTokenSigning', (token, req) => {
  const extra = req.body && req.body.claims ? JSON.parse(req.body.claims) : {};
  Object.assign(token.payload, extra);
});
server.service.addRoute('POST', '/control/rotate', async (_req, res) => {
  const key = await server.issuer.keys.generate('RS256');
  res.writeHead(200, { 'content-type': 'application/json' });
  res.end(JSON.stringify({ kid: key.kid }));
});
await server.start(0, '127.0.0.1');
// The issuer (and every URL in the discovery document) on the loopback address.
server.issuer.url = `http://127.0.0.1:${server.address().port}`;
console.log(JSON.stringify({ url: server.issuer.url }));
