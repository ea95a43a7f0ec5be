// SPDX-License-Identifier: GPL-2.0
/*
 * "gcm(aes)" computed by the host (knic_host->aes_gcm_*): AES-NI on a PC, the
 * crypto engine on a DPU. The library kernel is not built for the CPU's
 * instruction set, so its own AES-GCM is the generic C code, about a hundred
 * times slower; kernel TLS is the main user.
 *
 * The kernel's RAM is host memory, so each scatterlist entry is a host slice:
 * a request becomes a list of segments (AAD, then data as source/destination
 * pairs, adjacent pieces merged) that the host reads and writes in place. No
 * bounce buffer, no allocation per request. The key is expanded once, at
 * setkey, into a host handle that exit releases (the host wipes it).
 *
 * What the host does not take goes to the generic implementation: 192-bit
 * keys, truncated tags, a request in more pieces than the segment list holds,
 * and source and destination that overlap without being the same bytes.
 */
#include <crypto/aead.h>
#include <crypto/aes.h>
#include <crypto/gcm.h>
#include <crypto/internal/aead.h>
#include <crypto/scatterwalk.h>
#include <linux/atomic.h>
#include <linux/module.h>
#include <linux/scatterlist.h>
#include <asm/host_ops.h>

#define HOST_GCM_TAG_SIZE 16
/*
 * Segments per request, on the stack (24 bytes each). A TLS record is at most
 * MAX_SKB_FRAGS pieces on each side plus the AAD; more goes to the fallback.
 */
#define HOST_GCM_MAX_SEGS 40

struct host_gcm_ctx {
	/* The host's expanded key; NULL when the host does not take the key. */
	void *host_key;
	struct crypto_aead *fallback;
};

/* Requests the host could not take, by reason; the first of each is logged. */
static atomic_long_t host_gcm_fallback_segments = ATOMIC_LONG_INIT(0);
static atomic_long_t host_gcm_fallback_overlap = ATOMIC_LONG_INIT(0);

static bool host_gcm_takes(struct crypto_aead *tfm)
{
	struct host_gcm_ctx *ctx = crypto_aead_ctx(tfm);

	return ctx->host_key &&
	       crypto_aead_authsize(tfm) == HOST_GCM_TAG_SIZE;
}

static void host_gcm_drop_key(struct host_gcm_ctx *ctx)
{
	if (ctx->host_key) {
		knic_host->aes_gcm_key_free(ctx->host_key);
		ctx->host_key = NULL;
	}
}

static int host_gcm_setkey(struct crypto_aead *tfm, const u8 *key,
			   unsigned int key_len)
{
	struct host_gcm_ctx *ctx = crypto_aead_ctx(tfm);
	int err;

	/* The fallback validates the length and keeps its own copy. */
	err = crypto_aead_setkey(ctx->fallback, key, key_len);
	if (err)
		return err;
	host_gcm_drop_key(ctx);
	if (key_len == AES_KEYSIZE_128 || key_len == AES_KEYSIZE_256) {
		ctx->host_key = knic_host->aes_gcm_key_new(key, key_len);
		if (!ctx->host_key)
			return -ENOMEM;
	}
	return 0;
}

static int host_gcm_setauthsize(struct crypto_aead *tfm, unsigned int authsize)
{
	struct host_gcm_ctx *ctx = crypto_aead_ctx(tfm);

	return crypto_aead_setauthsize(ctx->fallback, authsize);
}

static int host_gcm_fallback(struct aead_request *req, bool encrypt)
{
	struct host_gcm_ctx *ctx = crypto_aead_ctx(crypto_aead_reqtfm(req));
	struct aead_request *subreq = aead_request_ctx(req);

	aead_request_set_tfm(subreq, ctx->fallback);
	aead_request_set_callback(subreq, req->base.flags, req->base.complete,
				  req->base.data);
	aead_request_set_crypt(subreq, req->src, req->dst, req->cryptlen,
			       req->iv);
	aead_request_set_ad(subreq, req->assoclen);
	return encrypt ? crypto_aead_encrypt(subreq) :
			 crypto_aead_decrypt(subreq);
}

/* A position in a scatterlist. */
struct host_gcm_pos {
	struct scatterlist *sg;
	unsigned int off;
};

/* Steps over exhausted (and empty) entries; false at the end of the list. */
static bool host_gcm_settle(struct host_gcm_pos *p)
{
	while (p->sg && p->off >= p->sg->length) {
		p->off -= p->sg->length;
		p->sg = sg_next(p->sg);
	}
	return p->sg;
}

/* The bytes left in the current entry, and their host address. */
static unsigned int host_gcm_avail(const struct host_gcm_pos *p, u8 **addr)
{
	*addr = (u8 *)sg_virt(p->sg) + p->off;
	return p->sg->length - p->off;
}

enum host_gcm_seg_result { SEG_OK, SEG_FULL, SEG_OVERLAP };

/* Appends a piece, merged into the previous one (from first on) if adjacent. */
static enum host_gcm_seg_result host_gcm_add(struct knic_crypt_seg *segs,
					     unsigned int first,
					     unsigned int *n, const u8 *src,
					     u8 *dst, unsigned int len)
{
	struct knic_crypt_seg *last = *n > first ? &segs[*n - 1] : NULL;

	if (dst && dst != src && dst < src + len && src < dst + len)
		return SEG_OVERLAP;
	if (last && last->src + last->len == src &&
	    (!dst || last->dst + last->len == dst)) {
		last->len += len;
		return SEG_OK;
	}
	if (*n == HOST_GCM_MAX_SEGS)
		return SEG_FULL;
	segs[(*n)++] = (struct knic_crypt_seg){ .src = src, .dst = dst,
						.len = len };
	return SEG_OK;
}

/*
 * The request as segments: the AAD read from src, then data_len bytes of src
 * after it paired with dst after the same offset.
 */
static enum host_gcm_seg_result
host_gcm_segments(struct aead_request *req, unsigned int data_len,
		  struct knic_crypt_seg *segs, unsigned int *aad_segs,
		  unsigned int *data_segs)
{
	struct host_gcm_pos s = { req->src, 0 }, d = { req->dst, req->assoclen };
	unsigned int left = req->assoclen, n = 0, len;
	enum host_gcm_seg_result r;
	u8 *src, *dst;

	while (left) {
		if (!host_gcm_settle(&s))
			return SEG_FULL; /* shorter than it says: let the fallback judge */
		len = min(left, host_gcm_avail(&s, &src));
		r = host_gcm_add(segs, 0, &n, src, NULL, len);
		if (r != SEG_OK)
			return r;
		s.off += len;
		left -= len;
	}
	*aad_segs = n;
	left = data_len;
	while (left) {
		if (!host_gcm_settle(&s) || !host_gcm_settle(&d))
			return SEG_FULL;
		len = min3(left, host_gcm_avail(&s, &src),
			   host_gcm_avail(&d, &dst));
		r = host_gcm_add(segs, *aad_segs, &n, src, dst, len);
		if (r != SEG_OK)
			return r;
		s.off += len;
		d.off += len;
		left -= len;
	}
	*data_segs = n - *aad_segs;
	return SEG_OK;
}

static int host_gcm_crypt(struct aead_request *req, bool encrypt)
{
	struct crypto_aead *tfm = crypto_aead_reqtfm(req);
	struct host_gcm_ctx *ctx = crypto_aead_ctx(tfm);
	struct knic_crypt_seg segs[HOST_GCM_MAX_SEGS];
	unsigned int data_len, aad_segs, data_segs;
	u8 tag[HOST_GCM_TAG_SIZE];
	int err;

	if (!host_gcm_takes(tfm))
		return host_gcm_fallback(req, encrypt);
	if (!encrypt && req->cryptlen < HOST_GCM_TAG_SIZE)
		return -EINVAL;
	data_len = encrypt ? req->cryptlen : req->cryptlen - HOST_GCM_TAG_SIZE;

	switch (host_gcm_segments(req, data_len, segs, &aad_segs, &data_segs)) {
	case SEG_OK:
		break;
	case SEG_FULL:
		if (atomic_long_inc_return(&host_gcm_fallback_segments) == 1)
			pr_info("knic: gcm(aes) request in over %d pieces: generic code\n",
				HOST_GCM_MAX_SEGS);
		return host_gcm_fallback(req, encrypt);
	case SEG_OVERLAP:
		if (atomic_long_inc_return(&host_gcm_fallback_overlap) == 1)
			pr_info("knic: gcm(aes) source and destination overlap: generic code\n");
		return host_gcm_fallback(req, encrypt);
	}
	/* The tag follows the data: in src to open, in dst when sealed. */
	if (!encrypt)
		scatterwalk_map_and_copy(tag, req->src,
					 req->assoclen + data_len,
					 HOST_GCM_TAG_SIZE, 0);
	err = knic_host->aes_gcm_crypt(ctx->host_key, encrypt, req->iv, segs,
				       aad_segs, data_segs, tag);
	if (!err && encrypt)
		scatterwalk_map_and_copy(tag, req->dst,
					 req->assoclen + data_len,
					 HOST_GCM_TAG_SIZE, 1);
	return err;
}

static int host_gcm_encrypt(struct aead_request *req)
{
	return host_gcm_crypt(req, true);
}

static int host_gcm_decrypt(struct aead_request *req)
{
	return host_gcm_crypt(req, false);
}

static int host_gcm_init(struct crypto_aead *tfm)
{
	struct host_gcm_ctx *ctx = crypto_aead_ctx(tfm);
	struct crypto_aead *fallback;

	/* Any "gcm(aes)" that is not itself in need of a fallback (not this one). */
	fallback = crypto_alloc_aead("gcm(aes)", 0, CRYPTO_ALG_NEED_FALLBACK);
	if (IS_ERR(fallback))
		return PTR_ERR(fallback);
	ctx->fallback = fallback;
	ctx->host_key = NULL;
	crypto_aead_set_reqsize(tfm, sizeof(struct aead_request) +
					     crypto_aead_reqsize(fallback));
	return 0;
}

static void host_gcm_exit(struct crypto_aead *tfm)
{
	struct host_gcm_ctx *ctx = crypto_aead_ctx(tfm);

	host_gcm_drop_key(ctx);
	crypto_free_aead(ctx->fallback);
}

static struct aead_alg host_gcm_alg = {
	.setkey = host_gcm_setkey,
	.setauthsize = host_gcm_setauthsize,
	.encrypt = host_gcm_encrypt,
	.decrypt = host_gcm_decrypt,
	.init = host_gcm_init,
	.exit = host_gcm_exit,
	.ivsize = GCM_AES_IV_SIZE,
	.maxauthsize = HOST_GCM_TAG_SIZE,
	.base = {
		.cra_name = "gcm(aes)",
		.cra_driver_name = "gcm-aes-knic-host",
		/* Above the generic template's 100 (its instance is 100 + the cipher's). */
		.cra_priority = 400,
		.cra_flags = CRYPTO_ALG_NEED_FALLBACK,
		.cra_blocksize = 1,
		.cra_ctxsize = sizeof(struct host_gcm_ctx),
		.cra_module = THIS_MODULE,
	},
};

static int __init host_gcm_register(void)
{
	if (!knic_host->aes_gcm_key_new || !knic_host->aes_gcm_key_free ||
	    !knic_host->aes_gcm_crypt) {
		pr_info("knic: no host AES-GCM; gcm(aes) is the generic C code\n");
		return 0;
	}
	return crypto_register_aead(&host_gcm_alg);
}
/* After the crypto API and the AES and GCM templates are up. */
late_initcall(host_gcm_register);
