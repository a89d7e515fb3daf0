/* auth.h - the connect-time challenge: the server sends a random nonce, the client answers
 * HMAC-SHA256(secret, "aquifer-auth-v1" || nonce); compared in constant time. */
#ifndef AQ_AUTH_H
#define AQ_AUTH_H
#include "common/common.h"
void auth_mac(const uint8_t *secret, size_t secret_len, const uint8_t *nonce, size_t nonce_len, uint8_t out[32]);
bool auth_equal(const uint8_t *a, const uint8_t *b, size_t n);
#endif
