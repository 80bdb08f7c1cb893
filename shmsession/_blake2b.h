/* BLAKE2b (RFC 7693) for keyed digests of up to 64 bytes, with a 16-byte personalisation:
 * what hashlib.blake2b(data, key=..., digest_size=..., person=...) computes, with the state
 * after the key block kept so that each digest costs the compression of its data alone
 * (an id of up to 128 bytes: one block). Written from RFC 7693; checked against hashlib
 * (tests/unit/test_compiled.py). */
#ifndef SHMSESSION_BLAKE2B_H
#define SHMSESSION_BLAKE2B_H

#include <stdint.h>
#include <string.h>

typedef struct {
    uint64_t h[8];   /* the chain value after the key block */
    uint8_t outlen;
} b2_keyed;

static const uint64_t b2_iv[8] = {
    0x6a09e667f3bcc908ULL, 0xbb67ae8584caa73bULL, 0x3c6ef372fe94f82bULL,
    0xa54ff53a5f1d36f1ULL, 0x510e527fade682d1ULL, 0x9b05688c2b3e6c1fULL,
    0x1f83d9abfb41bd6bULL, 0x5be0cd19137e2179ULL,
};

static const uint8_t b2_sigma[12][16] = {
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
    {14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3},
    {11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4},
    {7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8},
    {9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13},
    {2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9},
    {12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11},
    {13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10},
    {6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5},
    {10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0},
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
    {14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3},
};

static inline uint64_t b2_load64(const uint8_t *p) {
    uint64_t v;
    memcpy(&v, p, 8);  /* little-endian hosts only: the segment's layout is too */
    return v;
}

static inline uint64_t b2_rotr(uint64_t x, int n) { return (x >> n) | (x << (64 - n)); }

#define B2_G(a, b, c, d, x, y)              \
    do {                                    \
        v[a] = v[a] + v[b] + (x);           \
        v[d] = b2_rotr(v[d] ^ v[a], 32);    \
        v[c] = v[c] + v[d];                 \
        v[b] = b2_rotr(v[b] ^ v[c], 24);    \
        v[a] = v[a] + v[b] + (y);           \
        v[d] = b2_rotr(v[d] ^ v[a], 16);    \
        v[c] = v[c] + v[d];                 \
        v[b] = b2_rotr(v[b] ^ v[c], 63);    \
    } while (0)

/* One compression of the 128-byte block at ``block`` into ``h``: ``t`` bytes so far
 * (this block included), ``last`` for the final block. */
static void b2_compress(uint64_t h[8], const uint8_t *block, uint64_t t, int last) {
    uint64_t m[16], v[16];
    for (int i = 0; i < 16; i++) m[i] = b2_load64(block + 8 * i);
    for (int i = 0; i < 8; i++) {
        v[i] = h[i];
        v[i + 8] = b2_iv[i];
    }
    v[12] ^= t;
    if (last) v[14] = ~v[14];
    for (int r = 0; r < 12; r++) {
        const uint8_t *s = b2_sigma[r];
        B2_G(0, 4, 8, 12, m[s[0]], m[s[1]]);
        B2_G(1, 5, 9, 13, m[s[2]], m[s[3]]);
        B2_G(2, 6, 10, 14, m[s[4]], m[s[5]]);
        B2_G(3, 7, 11, 15, m[s[6]], m[s[7]]);
        B2_G(0, 5, 10, 15, m[s[8]], m[s[9]]);
        B2_G(1, 6, 11, 12, m[s[10]], m[s[11]]);
        B2_G(2, 7, 8, 13, m[s[12]], m[s[13]]);
        B2_G(3, 4, 9, 14, m[s[14]], m[s[15]]);
    }
    for (int i = 0; i < 8; i++) h[i] ^= v[i] ^ v[i + 8];
}

/* The state after the key block, for digests of ``outlen`` (1-64) bytes under ``key``
 * (1-64 bytes) and ``person`` (16 bytes, or NULL for none). */
static void b2_init_keyed(b2_keyed *s, const uint8_t *key, size_t keylen, size_t outlen,
                          const uint8_t *person) {
    uint8_t block[128];
    for (int i = 0; i < 8; i++) s->h[i] = b2_iv[i];
    /* the parameter block: digest length, key length, fanout 1, depth 1; person at 48 */
    s->h[0] ^= 0x01010000ULL ^ ((uint64_t)keylen << 8) ^ (uint64_t)outlen;
    if (person != NULL) {
        s->h[6] ^= b2_load64(person);
        s->h[7] ^= b2_load64(person + 8);
    }
    s->outlen = (uint8_t)outlen;
    memset(block, 0, sizeof block);
    memcpy(block, key, keylen);
    b2_compress(s->h, block, 128, 0);  /* never the last block: every input is non-empty */
}

/* The keyed digest of ``in`` (``n`` >= 1 bytes) into ``out`` (``s->outlen`` bytes). */
static void b2_digest(const b2_keyed *s, const uint8_t *in, size_t n, uint8_t *out) {
    uint64_t h[8];
    uint8_t block[128];
    uint64_t t = 128;
    memcpy(h, s->h, sizeof h);
    while (n > 128) {
        t += 128;
        b2_compress(h, in, t, 0);
        in += 128;
        n -= 128;
    }
    memset(block, 0, sizeof block);
    memcpy(block, in, n);
    t += n;
    b2_compress(h, block, t, 1);
    memcpy(out, h, s->outlen);  /* little-endian: the words' bytes in order */
}

#endif
