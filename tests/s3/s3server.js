// s3server.js - an S3-compatible server for Aquifer's S3 tests (s3rver, used as a library
// since the package has no bin). Usage:
//   node --openssl-legacy-provider s3server.js PORT DIR [BUCKET...]
// (the flag: see below). PORT 0 picks a free port. Prints one line "listening PORT" once
// requests are served, and exits on SIGTERM/SIGINT after closing the listener.
// Credentials: S3RVER / S3RVER.
'use strict'
const crypto = require('node:crypto')
const S3rver = require('@20minutes/s3rver')

// s3rver makes ListObjectsV2 continuation tokens with DES, which OpenSSL 3 keeps in its
// legacy provider: without `node --openssl-legacy-provider` every truncated listing
// (max-keys below the keys in the bucket) answers 500 InternalError.
try {
  crypto.createCipheriv('des', Buffer.alloc(8), Buffer.alloc(8))
} catch (e) {
  process.stderr.write('s3server: warning: no DES here (run node --openssl-legacy-provider): ' +
    'truncated ListObjectsV2 listings will answer 500\n')
}

const [port, dir, ...buckets] = process.argv.slice(2)
if (port === undefined || !dir) {
  process.stderr.write('usage: node s3server.js PORT DIR [BUCKET...]\n')
  process.exit(2)
}

const server = new S3rver({
  port: Number(port),
  address: '127.0.0.1',
  directory: dir,
  silent: true,
  configureBuckets: buckets.map((name) => ({ name })),
})

server.run((err, addr) => {
  if (err) {
    process.stderr.write(`s3server: ${err.stack || err}\n`)
    process.exit(1)
  }
  process.stdout.write(`listening ${addr.port}\n`)
})

const stop = () => server.close(() => process.exit(0))
process.on('SIGTERM', stop)
process.on('SIGINT', stop)
