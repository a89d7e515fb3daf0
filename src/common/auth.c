/* auth.c - HMAC challenge for connections (OpenSSL's HMAC-SHA256). */
#include "common/auth.h"
#include <openssl/evp.h>
#include <openssl/hmac.h>

void auth_mac(const uint8_t *secret, size_t secret_len, const uint8_t *nonce, size_t nonce_len, uint8_t out[32])
{
	static const char label[] = "aquifer-auth-v1";
	uint8_t msg[sizeof label - 1 + 64];
	AQ_ASSERT(nonce_len <= 64);
	memcpy(msg, label, sizeof label - 1);
	memcpy(msg + sizeof label - 1, nonce, nonce_len);
	unsigned int n = 32;
	AQ_ASSERT(HMAC(EVP_sha256(), secret, (int)secret_len, msg, sizeof label - 1 + nonce_len, out, &n));
	AQ_ASSERT(n == 32);
}

bool auth_equal(const uint8_t *a, const uint8_t *b, size_t n)
{
	uint8_t d = 0;
	for (size_t i = 0; i < n; i++)
		d |= a[i] ^ b[i];
	return d == 0;
}
