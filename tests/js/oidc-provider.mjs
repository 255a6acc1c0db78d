// A real OpenID Connect provider (npm `oidc-provider`, an OpenID-certified implementation) on a loopback port, for
// commandpost's single sign-on tests (tests/src/oidc.rs, tests/tests/oidc.rs).
//
//   node oidc-provider.mjs REDIRECT_URI...
//
// Prints `listening PORT` on stdout once it serves; the issuer is http://127.0.0.1:PORT. The client `commandpost`
// (secret `commandpost-secret`) may redirect to the given URIs. The login page is the provider's own development
// page (any password); consent is granted without asking, as for a first-party application.
//
// Test users: alice (groups sre, eng), bob (eng), carol (no group), dave (a name commandpost cannot use).
//
// The signing key is generated here, so that a test can ask for a bad ID token in the next token response:
// `POST /__test/next-id-token` with one of `wrong-audience`, `expired`, `tampered`, `wrong-nonce`, `replay` (the ID
// token of the previous sign-in). The token response is otherwise the provider's own; discovery, keys, login and
// the code exchange are all the real provider's.

import http from 'node:http';
import Provider from 'oidc-provider';
import * as jose from 'jose';

const redirectUris = process.argv.slice(2);
if (redirectUris.length === 0) {
  console.error('usage: node oidc-provider.mjs REDIRECT_URI...');
  process.exit(2);
}

const { privateKey } = await jose.generateKeyPair('RS256', { extractable: true });
const signingKey = { ...(await jose.exportJWK(privateKey)), kid: 'test-key', alg: 'RS256', use: 'sig' };

const users = {
  alice: { groups: ['sre', 'eng'], email: 'alice@example.com' },
  bob: { groups: ['eng'], email: 'bob@example.com' },
  carol: { groups: [], email: 'carol@example.com' },
  dave: { groups: ['eng'], email: 'dave@example.com', preferred_username: 'dave smith' },
};

const configuration = {
  clients: [
    {
      client_id: 'commandpost',
      client_secret: 'commandpost-secret',
      redirect_uris: redirectUris,
      grant_types: ['authorization_code'],
      response_types: ['code'],
    },
  ],
  jwks: { keys: [signingKey] },
  cookies: { keys: ['commandpost-test-cookie-key'] },
  pkce: { required: () => true },
  scopes: ['openid', 'profile', 'email', 'groups'],
  claims: {
    openid: ['sub'],
    profile: ['preferred_username', 'name'],
    email: ['email', 'email_verified'],
    groups: ['groups'],
  },
  // Every claim of the granted scopes in the ID token, as Keycloak and Dex send groups.
  conformIdTokenClaims: false,
  features: { devInteractions: { enabled: true } },
  async findAccount(ctx, id) {
    if (!Object.hasOwn(users, id)) return undefined;
    const user = users[id];
    return {
      accountId: id,
      async claims() {
        return {
          sub: id,
          preferred_username: user.preferred_username ?? id,
          name: id,
          email: user.email,
          email_verified: true,
          groups: user.groups,
        };
      },
    };
  },
  // A first-party client: consent is implied, so the login page is the only page.
  async loadExistingGrant(ctx) {
    const grantId = ctx.oidc.result?.consent?.grantId
      || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    if (grantId) return ctx.oidc.provider.Grant.find(grantId);
    if (!ctx.oidc.session.accountId) return undefined;
    const grant = new ctx.oidc.provider.Grant({
      clientId: ctx.oidc.client.clientId,
      accountId: ctx.oidc.session.accountId,
    });
    grant.addOIDCScope('openid profile email groups');
    await grant.save();
    return grant;
  },
};

let nextIdToken = null;
let previousIdToken = null;

async function rewrite(idToken, mode) {
  const payload = jose.decodeJwt(idToken);
  const now = Math.floor(Date.now() / 1000);
  const sign = (claims) => new jose.SignJWT(claims)
    .setProtectedHeader({ alg: 'RS256', kid: signingKey.kid, typ: 'JWT' })
    .sign(privateKey);
  switch (mode) {
    case 'wrong-audience':
      return sign({ ...payload, aud: 'someone-else' });
    case 'expired':
      return sign({ ...payload, iat: now - 7200, exp: now - 3600 });
    case 'wrong-nonce':
      return sign({ ...payload, nonce: 'not-the-nonce-of-this-sign-in' });
    case 'tampered': {
      // The provider's signature over other claims: admin groups for someone who has none.
      const [header, , signature] = idToken.split('.');
      const forged = Buffer.from(JSON.stringify({ ...payload, groups: ['sre'] })).toString('base64url');
      return `${header}.${forged}.${signature}`;
    }
    case 'replay':
      if (!previousIdToken) throw new Error('no earlier ID token to replay');
      return previousIdToken;
    default:
      throw new Error(`unknown mode ${mode}`);
  }
}

const server = http.createServer();
server.listen(0, '127.0.0.1', () => {
  const { port } = server.address();
  const provider = new Provider(`http://127.0.0.1:${port}`, configuration);
  provider.use(async (ctx, next) => {
    await next();
    if (ctx.path === '/token' && ctx.status === 200 && ctx.body?.id_token) {
      const real = ctx.body.id_token;
      if (nextIdToken) {
        const mode = nextIdToken;
        nextIdToken = null;
        ctx.body = { ...ctx.body, id_token: await rewrite(real, mode) };
      }
      previousIdToken = real;
    }
  });
  const handle = provider.callback();
  server.on('request', (req, res) => {
    if (req.method === 'POST' && req.url === '/__test/next-id-token') {
      let body = '';
      req.on('data', (chunk) => { body += chunk; });
      req.on('end', () => {
        nextIdToken = body.trim();
        res.writeHead(204).end();
      });
      return;
    }
    handle(req, res);
  });
  console.log(`listening ${port}`);
});
