// A real OpenID Provider for development and tests (never production: Keycloak is).
// It emits the claims Keycloak emits for Loanfolio's realm (config/keycloak-realm.json):
// `realm_access.roles`, `team`, `amr`, `acr`, `auth_time` in JWT access tokens whose
// audience is the API resource.
//
// Environment: OIDC_PORT (default 8090), OIDC_ISSUER (default http://127.0.0.1:$OIDC_PORT),
// OIDC_STATE_DIR (signing keys live there so restarts keep them), OIDC_REDIRECT_URIS
// (comma separated, added to the `loanfolio` client).
//
// Login without a browser: the interaction page accepts `?user=<id>` (a key of users.json)
// and finishes the login at once; tests drive the real authorization-code + PKCE flow
// through it. Control routes under /__test (only on this test provider): rotate the
// signing key, count JWKS fetches.
import fs from 'node:fs';
import path from 'node:path';
import crypto from 'node:crypto';
import http from 'node:http';
import Provider from 'oidc-provider';

const port = Number(process.env.OIDC_PORT || 8090);
const issuer = process.env.OIDC_ISSUER || `http://127.0.0.1:${port}`;
const stateDir = process.env.OIDC_STATE_DIR || path.join(path.dirname(new URL(import.meta.url).pathname), 'state');
const users = JSON.parse(fs.readFileSync(new URL('./users.json', import.meta.url)));
const audience = 'urn:loanfolio:api';
const redirectUris = (process.env.OIDC_REDIRECT_URIS || 'http://127.0.0.1:8080/auth/callback')
  .split(',').map((s) => s.trim()).filter(Boolean);

fs.mkdirSync(stateDir, { recursive: true });
const keysFile = path.join(stateDir, 'jwks.json');

function newSigningKey() {
  const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = privateKey.export({ format: 'jwk' });
  return { ...jwk, kid: crypto.randomUUID(), alg: 'RS256', use: 'sig' };
}

function loadKeys() {
  if (fs.existsSync(keysFile)) return JSON.parse(fs.readFileSync(keysFile));
  const jwks = { keys: [newSigningKey()] };
  fs.writeFileSync(keysFile, JSON.stringify(jwks), { mode: 0o600 });
  return jwks;
}

function accountClaims(id) {
  const user = users[id];
  // A disabled or deleted user has no account: refresh grants are refused (invalid_grant),
  // as Keycloak refuses them for a disabled user.
  if (!user || user.disabled) return undefined;
  return {
    accountId: id,
    async claims() {
      return { sub: id, name: user.name, email: user.email, email_verified: true };
    },
  };
}

function configuration(jwks) {
  return {
    clients: [{
      client_id: 'loanfolio',
      client_secret: 'loanfolio-dev-client-secret',
      redirect_uris: redirectUris,
      post_logout_redirect_uris: redirectUris.map((u) => new URL('/', u).toString()),
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
      // Keycloak's client setting: logout tokens (and so ID tokens) carry the session's sid.
      backchannel_logout_uri: new URL('/auth/backchannel-logout', redirectUris[0]).toString(),
      backchannel_logout_session_required: true,
    }],
    jwks,
    // Keycloak issues refresh tokens with every authorization-code grant; so does this one,
    // so that the service can re-check a session's user (issue 13, defect 3).
    issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
    pkce: { required: () => true },
    scopes: ['openid', 'profile', 'email', 'offline_access'],
    claims: { openid: ['sub'], profile: ['name'], email: ['email', 'email_verified'] },
    findAccount: (ctx, id) => accountClaims(id),
    features: {
      devInteractions: { enabled: false },
      // As Keycloak: ID tokens carry the provider session's `sid`, which logout tokens name.
      backchannelLogout: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => audience,
        useGrantedResource: () => true,
        getResourceServerInfo: () => ({
          scope: 'openid profile email',
          audience,
          accessTokenFormat: 'jwt',
          accessTokenTTL: Number(process.env.OIDC_ACCESS_TOKEN_TTL || 300),
          jwt: { sign: { alg: 'RS256' } },
        }),
      },
    },
    extraTokenClaims(ctx, token) {
      const user = users[token.accountId];
      if (!user) return undefined;
      // Keycloak's default mappers put these in access tokens too.
      const extra = {
        realm_access: { roles: user.roles }, amr: user.amr, acr: user.acr, typ: 'Bearer',
        name: user.name, preferred_username: token.accountId, email: user.email,
      };
      // Keycloak puts auth_time in access tokens; step-up checks (RFC 9470) read it.
      const grantEntity = ctx.oidc.entities.AuthorizationCode || ctx.oidc.entities.RefreshToken;
      if (grantEntity && grantEntity.authTime) extra.auth_time = grantEntity.authTime;
      if (user.team) extra.team = user.team;
      return extra;
    },
    interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
    ttl: { Session: 3600, Interaction: 600, Grant: 3600, AccessToken: 300, IdToken: 300, AuthorizationCode: 60 },
  };
}

let jwksFetches = 0;
let provider;
let handler;

function build(jwks) {
  const p = new Provider(issuer, configuration(jwks));
  p.proxy = true;
  p.use(testRoutes);
  handler = p.callback();
  return p;
}

async function testRoutes(ctx, next) {
  if (ctx.path === '/jwks') jwksFetches += 1;
  if (ctx.path === '/__test/jwks-fetches') {
    ctx.body = { count: jwksFetches };
    return;
  }
  if (ctx.path === '/__test/sign' && ctx.method === 'POST') {
    // Signs whatever it is given with the current key: the tests' hostile tokens (expired,
    // wrong audience, wrong issuer, unknown kid) carry a real signature, so only the claim
    // under test is wrong. Never on a real provider.
    const body = await new Promise((resolve) => {
      let data = '';
      ctx.req.on('data', (c) => { data += c; });
      ctx.req.on('end', () => resolve(JSON.parse(data || '{}')));
    });
    const current = JSON.parse(fs.readFileSync(keysFile)).keys[0];
    const header = { alg: 'RS256', typ: 'at+jwt', kid: current.kid, ...(body.header || {}) };
    const enc = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
    const input = `${enc(header)}.${enc(body.payload || {})}`;
    const key = crypto.createPrivateKey({ key: current, format: 'jwk' });
    const signature = crypto.sign('sha256', Buffer.from(input), key).toString('base64url');
    ctx.body = { token: `${input}.${signature}` };
    return;
  }
  if (ctx.path === '/__test/public-key' && ctx.method === 'GET') {
    const current = JSON.parse(fs.readFileSync(keysFile)).keys[0];
    const pem = crypto.createPublicKey({ key: current, format: 'jwk' }).export({ type: 'spki', format: 'pem' });
    ctx.body = { kid: current.kid, pem };
    return;
  }
  if (ctx.path === '/__test/users' && ctx.method === 'POST') {
    // Tests create users of their own (unique ids), then change them: a new team or roles
    // (seen at the next refresh), or `disabled` (refresh refused). Never on a real provider.
    const body = await new Promise((resolve) => {
      let data = '';
      ctx.req.on('data', (c) => { data += c; });
      ctx.req.on('end', () => resolve(JSON.parse(data || '{}')));
    });
    if (!body.id) { ctx.status = 400; ctx.body = { error: 'id required' }; return; }
    users[body.id] = {
      name: 'Test User', email: `${body.id}@lender.test`, roles: ['agent'], team: 'team-a',
      amr: ['pwd', 'otp'], acr: 'mfa', ...(users[body.id] || {}), ...body,
    };
    delete users[body.id].id;
    ctx.body = users[body.id];
    return;
  }
  if (ctx.path === '/__test/rotate-key' && ctx.method === 'POST') {
    // The new key signs from now on; the old one stays published so tokens already issued
    // keep verifying until they expire, as Keycloak does after a rotation.
    const current = JSON.parse(fs.readFileSync(keysFile));
    current.keys.unshift(newSigningKey());
    fs.writeFileSync(keysFile, JSON.stringify(current), { mode: 0o600 });
    // oidc-provider takes its keys at construction; a new instance shares the in-memory
    // adapter's storage, so sessions and grants survive the swap.
    provider = build(current);
    ctx.body = { kid: current.keys[0].kid };
    return;
  }
  const m = ctx.path.match(/^\/interaction\/([^/]+)$/);
  if (m && ctx.method === 'GET') {
    const details = await provider.interactionDetails(ctx.req, ctx.res);
    const userId = ctx.query.user;
    if (!userId || !users[userId]) {
      ctx.type = 'html';
      ctx.body = `<!doctype html><title>Test login</title><h1>Loanfolio test provider</h1><ul>${
        Object.keys(users).map((u) => `<li><a href="/interaction/${details.uid}?user=${u}">${u}</a></li>`).join('')}</ul>`;
      return;
    }
    const grant = new provider.Grant({ accountId: userId, clientId: details.params.client_id });
    grant.addOIDCScope('openid profile email');
    grant.addResourceScope(audience, 'openid profile email');
    const grantId = await grant.save();
    await provider.interactionFinished(ctx.req, ctx.res, {
      login: { accountId: userId, amr: users[userId].amr, acr: users[userId].acr },
      consent: { grantId },
    }, { mergeWithLastSubmission: false });
    return;
  }
  await next();
}

provider = build(loadKeys());
http.createServer((req, res) => handler(req, res)).listen(port, '127.0.0.1', () => {
  console.log(`oidc-provider listening on ${issuer}`);
});
