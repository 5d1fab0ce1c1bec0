// A real OAuth 2.1 / OpenID authorization server for the sign-in tests: the `oidc-provider` package
// from npm (installed by tests/conftest.py's `oidc_provider` fixture, or .ci/run), on loopback.
//
//   node provider.mjs <config.json>      config: {issuer, port, resource, jwks: {keys: [private JWKs]},
//                                                 clients: [...static clients], ttl}
// Authorization code + PKCE (S256, required), dynamic client registration, resource indicators
// (RFC 8707) issuing JWT access tokens (RFC 9068) for the requested resource with scope
// `stillmotion`, client credentials for the negative tests, and the package's own development
// login and consent pages (any login name signs in as that user; the token's `sub` is the name).
import fs from 'node:fs';
import { pathToFileURL } from 'node:url';

const cfg = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const { default: Provider } = await import(pathToFileURL(process.env.OIDC_PROVIDER_MODULE).href);

const provider = new Provider(cfg.issuer, {
  jwks: cfg.jwks,
  clients: cfg.clients || [],
  scopes: ['openid', 'offline_access', 'stillmotion'],
  pkce: { required: () => true },
  features: {
    devInteractions: { enabled: true },
    registration: { enabled: true },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => cfg.resource,
      useGrantedResource: () => true,
      getResourceServerInfo: () => ({
        scope: 'stillmotion',
        accessTokenTTL: cfg.ttl || 300,
        accessTokenFormat: 'jwt',
        jwt: { sign: { alg: 'RS256' } },
      }),
    },
  },
  async findAccount(ctx, id) {
    return { accountId: id, async claims() { return { sub: id }; } };
  },
});
provider.proxy = false;
provider.listen(cfg.port, '127.0.0.1', () => {
  process.stdout.write('ready\n');
});
