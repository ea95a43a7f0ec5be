// SPDX-License-Identifier: GPL-2.0
/*
 * "gcm(aes)" computed by the host (knic_host->aes_gcm): AES-NI on a PC, the
 * crypto engine on a DPU. The library kernel is not built for the CPU's
 * instruction set, so its own AES-GCM is the generic C code, about a hundred
 * times slower; kernel TLS is the main user.
 *
 * The host takes one contiguous buffer, so requests are gathered into a bounce
 * buffer and scattered back. Key sizes and tag lengths the host does not take
 * (192-bit keys, truncated tags) go to the generic implementation.
 */
#include <crypto/aead.h>
#include <crypto/gcm.h>
#include <crypto/internal/aead.h>
#include <crypto/scatterwalk.h>
#include <linux/module.h>
#include <linux/slab.h>
#include <asm/host_ops.h>

#define HOST_GCM_TAG_SIZE 16

struct host_gcm_ctx {
	u8 key[32];
	unsigned int key_len;
	struct crypto_aead *fallback;
};

static bool host_gcm_takes(struct crypto_aead *tfm)
{
	struct host_gcm_ctx *ctx = crypto_aead_ctx(tfm);

	return (ctx->key_len == 16 || ctx->key_len == 32) &&
	       crypto_aead_authsize(tfm) == HOST_GCM_TAG_SIZE;
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
	memcpy(ctx->key, key, key_len);
	ctx->key_len = key_len;
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

static int host_gcm_crypt(struct aead_request *req, bool encrypt)
{
	struct crypto_aead *tfm = crypto_aead_reqtfm(req);
	struct host_gcm_ctx *ctx = crypto_aead_ctx(tfm);
	gfp_t gfp = req->base.flags & CRYPTO_TFM_REQ_MAY_SLEEP ? GFP_KERNEL :
								  GFP_ATOMIC;
	unsigned int assoc = req->assoclen, data_len;
	u8 *buf, *tag;
	int err;

	if (!host_gcm_takes(tfm))
		return host_gcm_fallback(req, encrypt);
	if (!encrypt && req->cryptlen < HOST_GCM_TAG_SIZE)
		return -EINVAL;
	data_len = encrypt ? req->cryptlen : req->cryptlen - HOST_GCM_TAG_SIZE;

	/* AAD, data, tag: the layout of both src and dst. */
	buf = kmalloc(assoc + data_len + HOST_GCM_TAG_SIZE, gfp);
	if (!buf)
		return -ENOMEM;
	tag = buf + assoc + data_len;
	scatterwalk_map_and_copy(buf, req->src, 0, assoc + req->cryptlen, 0);
	err = knic_host->aes_gcm(encrypt, ctx->key, ctx->key_len, req->iv, buf,
				 assoc, buf + assoc, data_len, tag);
	if (!err)
		scatterwalk_map_and_copy(buf + assoc, req->dst, assoc,
					 encrypt ? data_len + HOST_GCM_TAG_SIZE :
						   data_len,
					 1);
	kfree_sensitive(buf);
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
	crypto_aead_set_reqsize(tfm, sizeof(struct aead_request) +
					     crypto_aead_reqsize(fallback));
	return 0;
}

static void host_gcm_exit(struct crypto_aead *tfm)
{
	struct host_gcm_ctx *ctx = crypto_aead_ctx(tfm);

	crypto_free_aead(ctx->fallback);
	memzero_explicit(ctx->key, sizeof(ctx->key));
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
	if (!knic_host->aes_gcm) {
		pr_info("knic: no host AES-GCM; gcm(aes) is the generic C code\n");
		return 0;
	}
	return crypto_register_aead(&host_gcm_alg);
}
/* After the crypto API and the AES and GCM templates are up. */
late_initcall(host_gcm_register);
