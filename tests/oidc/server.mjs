// An independent OIDC server for the tests: npm's oauth2-mock-server, laid out like one
// Keycloak realm. Prints {"url": ...} once listening. Token requests may carry a `claims`
// form field (JSON) merged into the token; POST /control/rotate adds a signing key (the
// server then signs with its keys in turn). The authorization endpoint signs the browser in
// at once (the mock's behaviour); POST /control/login-claims (a JSON body) sets the claims of
// the access tokens later authorization codes are exchanged for (`sub` also goes into the ID
// token, whose `aud` stays the client and `nonce` the one sent to the authorization endpoint).
import { OAuth2Server } from 'oauth2-mock-server';

const realm = process.argv[2] || 'byok';
const base = `/realms/${realm}`;
const server = new OAuth2Server(undefined, undefined, {
  endpoints: {
    wellKnownDocument: `${base}/.well-known/openid-configuration`,
    token: `${base}/protocol/openid-connect/token`,
    jwks: `${base}/protocol/openid-connect/certs`,
    authorize: `${base}/protocol/openid-connect/auth`,
  },
});
let loginClaims = {};
await server.issuer.keys.generate('RS256');
server.service.on('beforeTokenSigning', (token, req) => {
  const extra = req.body && req.body.claims ? JSON.parse(req.body.claims) : {};
  Object.assign(token.payload, extra);
  if (req.body && req.body.grant_type === 'authorization_code') {
    if (token.payload.scope !== undefined) {
      Object.assign(token.payload, loginClaims); // the access token
    } else if (loginClaims.sub) {
      token.payload.sub = loginClaims.sub; // the ID token
    }
  }
});
server.service.addRoute('POST', '/control/login-claims', async (req, res) => {
  loginClaims = req.body || {}; // parsed by the mock (content-type: application/json)
  res.writeHead(204);
  res.end();
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
