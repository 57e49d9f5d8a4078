// Development only: a CORS front for s3s-fs, which (unlike MinIO) does not answer CORS
// preflights. Browsers PUT borrowers' files straight to object storage from the upload page,
// a cross-origin request; MinIO answers it itself (compose). This front forwards every
// request unchanged — the Host header too, so pre-signed URL signatures made for this
// address still verify at s3s-fs — and adds the CORS headers for loopback origins only.
import http from 'node:http';

const listenPort = Number(process.env.S3_CORS_PORT);
const upstreamPort = Number(process.env.S3_PORT);
const loopback = /^https?:\/\/(127\.0\.0\.1|localhost)(:\d+)?$/;

http
  .createServer((req, res) => {
    const origin = req.headers.origin;
    const cors =
      origin && loopback.test(origin)
        ? { 'access-control-allow-origin': origin, vary: 'Origin', 'access-control-expose-headers': 'ETag' }
        : {};
    if (req.method === 'OPTIONS' && req.headers['access-control-request-method']) {
      res.writeHead(cors['access-control-allow-origin'] ? 204 : 403, {
        ...cors,
        'access-control-allow-methods': 'PUT, GET, HEAD',
        'access-control-allow-headers': req.headers['access-control-request-headers'] || '',
        'access-control-max-age': '600',
      });
      res.end();
      return;
    }
    const upstream = http.request(
      { host: '127.0.0.1', port: upstreamPort, method: req.method, path: req.url, headers: req.headers },
      (answer) => {
        res.writeHead(answer.statusCode, { ...answer.headers, ...cors });
        answer.pipe(res);
      },
    );
    upstream.on('error', () => {
      if (!res.headersSent) res.writeHead(502);
      res.end();
    });
    req.pipe(upstream);
  })
  .listen(listenPort, '127.0.0.1');
