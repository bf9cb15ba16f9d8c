// tests/queue/dkim_signer_test.cc: queue/dkim_signer without a relay: loading the key table
// from the config (errors name the file), which keys sign a message (the From: domain, its
// parents, --dkim-sign-all, nobody), the signing job run as the pool would run it (fields and
// summaries; a key that fails to sign is an error and no field), and the signer's reload
// (all keys load or the table in use stays).
#include "queue/dkim_signer.h"

#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

using namespace ringrelay;
using namespace ringrelay::queue;
namespace dkim = ringrelay::protocol::dkim;

namespace {

class DkimSigner : public ::testing::Test {
protected:
    void SetUp() override {
        char templ[] = "/tmp/rr-dkim-signer-XXXXXX";
        ASSERT_NE(::mkdtemp(templ), nullptr);
        dir = templ;
        rsa = write_key("RSA", 2048, "rsa.pem");
        ed = write_key("ED25519", 0, "ed.pem");
        ed2 = write_key("ED25519", 0, "ed2.pem");
    }
    void TearDown() override { std::filesystem::remove_all(dir); }

    std::string write_key(const char* type, unsigned bits, const char* name) {
        EVP_PKEY* key = bits != 0 ? EVP_PKEY_Q_keygen(nullptr, nullptr, type, static_cast<size_t>(bits))
                                  : EVP_PKEY_Q_keygen(nullptr, nullptr, type);
        EXPECT_NE(key, nullptr);
        const std::string path = dir + "/" + name;
        FILE* f = std::fopen(path.c_str(), "w");
        EXPECT_NE(f, nullptr);
        EXPECT_EQ(PEM_write_PrivateKey(f, key, nullptr, nullptr, 0, nullptr, nullptr), 1);
        std::fclose(f);
        EVP_PKEY_free(key);
        return path;
    }

    static std::vector<std::string> signers(const dkim_keys& table, std::string_view author) {
        std::vector<const dkim_key*> keys;
        table.select(author, keys);
        std::vector<std::string> out;
        for (const dkim_key* k : keys) out.push_back(k->domain + "/" + k->selector);
        return out;
    }

    std::string dir, rsa, ed, ed2;
};

TEST_F(DkimSigner, LoadsKeysAndSaysWhichSign) {
    core::config c;
    c.dkim_keys = {"Example.ORG:rsa:" + rsa, "example.org:ed:" + ed, "esp.test:fbl:" + ed2};
    auto table = dkim_keys::load(c);
    ASSERT_TRUE(table.has_value()) << table.error();
    const dkim_keys& t = **table;
    ASSERT_EQ(t.keys().size(), 3U);
    EXPECT_EQ(t.keys()[0].domain, "example.org") << "domains are lower-cased";
    EXPECT_EQ(t.keys()[0].key.alg, dkim::algorithm::rsa_sha256);
    EXPECT_EQ(t.keys()[0].key.bits, 2048U);
    EXPECT_EQ(t.keys()[1].key.alg, dkim::algorithm::ed25519_sha256);
    EXPECT_EQ(signers(t, "example.org"), (std::vector<std::string>{"example.org/rsa", "example.org/ed"}));
    EXPECT_EQ(signers(t, "mail.example.org"), (std::vector<std::string>{"example.org/rsa", "example.org/ed"}))
        << "a subdomain without keys takes its parent's";
    EXPECT_EQ(signers(t, "a.b.mail.example.org"), (std::vector<std::string>{"example.org/rsa", "example.org/ed"}));
    EXPECT_TRUE(signers(t, "other.test").empty());
    EXPECT_TRUE(signers(t, "").empty());
    EXPECT_TRUE(signers(t, "notexample.org").empty()) << "a parent is a whole label away";
    EXPECT_EQ(signers(t, "esp.test"), std::vector<std::string>{"esp.test/fbl"});
    EXPECT_EQ(t.canon(), (dkim::canonicalization{dkim::canon::relaxed, dkim::canon::relaxed}));
    EXPECT_FALSE(t.expiration_s().has_value());
    EXPECT_NE(t.describe().find("d=example.org s=rsa a=rsa-sha256 (2048 bits) from " + rsa), std::string::npos)
        << t.describe();
}

TEST_F(DkimSigner, SignAllAddsItsKeysOnce) {
    core::config c;
    c.dkim_keys = {"example.org:ed:" + ed, "esp.test:fbl:" + ed2};
    c.dkim_sign_all = "ESP.test";
    c.dkim_canonicalization = "simple/relaxed";
    c.dkim_expiration = "2h";
    auto table = dkim_keys::load(c);
    ASSERT_TRUE(table.has_value()) << table.error();
    const dkim_keys& t = **table;
    EXPECT_EQ(signers(t, "example.org"), (std::vector<std::string>{"example.org/ed", "esp.test/fbl"}));
    EXPECT_EQ(signers(t, "other.test"), std::vector<std::string>{"esp.test/fbl"});
    EXPECT_EQ(signers(t, "esp.test"), std::vector<std::string>{"esp.test/fbl"}) << "not twice for its own mail";
    EXPECT_EQ(signers(t, "news.esp.test"), std::vector<std::string>{"esp.test/fbl"});
    EXPECT_EQ(t.canon(), (dkim::canonicalization{dkim::canon::simple, dkim::canon::relaxed}));
    EXPECT_EQ(t.expiration_s(), 7200);
}

TEST_F(DkimSigner, LoadErrorsNameTheFileAndTheReason) {
    auto error_of = [](std::vector<std::string> keys) {
        core::config c;
        c.dkim_keys = std::move(keys);
        auto t = dkim_keys::load(c);
        return t ? std::string("loaded") : t.error();
    };
    EXPECT_NE(error_of({"example.org:s:" + dir + "/missing.pem"}).find(dir + "/missing.pem: No such file or directory"),
              std::string::npos);
    const std::string junk = dir + "/junk.pem";
    std::ofstream(junk) << "not a key\n";
    EXPECT_NE(error_of({"example.org:s:" + junk}).find(junk + ": not a PEM private key"), std::string::npos);
    EXPECT_NE(error_of({"exa mple.org:s:" + ed}).find("the domain is not"), std::string::npos);
    EXPECT_NE(error_of({"example.org:s;x=1:" + ed}).find("the selector is not"), std::string::npos);
    EXPECT_NE(error_of({"example.org:s:" + ed, "EXAMPLE.org:s:" + ed2}).find("a second key for s._domainkey.example.org"),
              std::string::npos);
    EXPECT_EQ(error_of({"example.org:s:" + ed}), "loaded");
}

// A message as the connection holds it: the relay's Received: field first.
const std::string message =
    "Received: from c (192.0.2.1)\r\n\tby mx (ringrelay) with ESMTP id 1; Sat, 05 Dec 2026 10:00:00 +0000\r\n"
    "From: Joe <joe@mail.example.org>\r\nTo: r@dest.test\r\nSubject: hi\r\n\r\nbody\r\n";

dkim::sha256_digest body_hash_of(const std::string& m) {
    dkim::body_hash_stream s(dkim::canon::relaxed);
    s.update(m);
    auto d = s.finish();
    EXPECT_TRUE(d.has_value());
    return d.value_or(dkim::sha256_digest{});
}

TEST_F(DkimSigner, JobMakesOneFieldPerKey) {
    core::config c;
    c.dkim_keys = {"example.org:rsa:" + rsa, "example.org:ed:" + ed};
    auto table = dkim_keys::load(c);
    ASSERT_TRUE(table.has_value()) << table.error();
    dkim_plan plan = plan_signatures(**table, message);
    ASSERT_EQ(plan.keys.size(), 2U);
    int done = 0;
    dkim_job job(&done, [](void* owner, dkim_job&) noexcept { ++*static_cast<int*>(owner); });
    job.prepare(*table, std::move(plan.keys), std::move(plan.fields), body_hash_of(message), 1796500000);
    job.run(0);
    job.finish();
    EXPECT_EQ(done, 1);
    EXPECT_TRUE(job.errors().empty());
    EXPECT_EQ(job.summaries(), (std::vector<std::string>{"d=example.org s=rsa a=rsa-sha256",
                                                         "d=example.org s=ed a=ed25519-sha256"}));
    const std::string& f = job.fields();
    ASSERT_TRUE(f.starts_with("DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.org; s=rsa;")) << f;
    const std::size_t second = f.find("\r\nDKIM-Signature: v=1; a=ed25519-sha256;");
    EXPECT_NE(second, std::string::npos) << f;
    EXPECT_TRUE(f.ends_with("\r\n"));
    EXPECT_NE(f.find("t=1796500000;"), std::string::npos) << f;
    EXPECT_NE(f.find("h=from:from:subject:subject:to:to;"), std::string::npos) << f;
    job.clear();
    EXPECT_TRUE(job.fields().empty());
}

// The shard signs an Ed25519-only message itself (connection::begin_commit): ed25519_only()
// picks the path, and sign_with() on a caller's cache makes what the pool would make; any RSA
// key sends the job to the pool.
TEST_F(DkimSigner, Ed25519OnlyJobsSignWithTheCallersCache) {
    core::config c;
    c.dkim_keys = {"example.org:ed:" + ed, "example.org:ed2:" + ed2, "other.example:rsa:" + rsa};
    auto table = dkim_keys::load(c);
    ASSERT_TRUE(table.has_value()) << table.error();
    dkim_plan plan = plan_signatures(**table, message);
    ASSERT_EQ(plan.keys.size(), 2U);
    dkim_job job(nullptr, [](void*, dkim_job&) noexcept {});
    job.prepare(*table, plan.keys, plan.fields, body_hash_of(message), 1796500000);
    EXPECT_TRUE(job.ed25519_only());
    dkim::signer_cache cache;
    job.sign_with(&cache);
    EXPECT_TRUE(job.errors().empty());
    EXPECT_EQ(cache.size(), 2U);  // the caller's state signed, one entry per key
    const std::string inline_fields = job.fields();
    dkim_job pooled(nullptr, [](void*, dkim_job&) noexcept {});
    pooled.prepare(*table, plan.keys, plan.fields, body_hash_of(message), 1796500000);
    pooled.run(0);
    // Ed25519 is deterministic (RFC 8032): the same input gives the same signature.
    EXPECT_EQ(inline_fields, pooled.fields());
    EXPECT_EQ(job.summaries(), (std::vector<std::string>{"d=example.org s=ed a=ed25519-sha256",
                                                         "d=example.org s=ed2 a=ed25519-sha256"}));
    // An RSA key among them: the pool's job.
    const dkim_key* rsa_key = nullptr;
    for (const dkim_key& k : (*table)->keys())
        if (k.selector == "rsa") rsa_key = &k;
    ASSERT_NE(rsa_key, nullptr);
    std::vector<const dkim_key*> mixed = plan.keys;
    mixed.push_back(rsa_key);
    job.prepare(*table, mixed, plan.fields, body_hash_of(message), 1796500000);
    EXPECT_FALSE(job.ed25519_only());
    job.prepare(*table, {}, plan.fields, body_hash_of(message), 1796500000);
    EXPECT_FALSE(job.ed25519_only());  // nothing to sign is not the shard's signing either
}

// A key that cannot sign (here an Ed25519 key said to be RSA, which OpenSSL refuses to sign
// with SHA-256) leaves an error and no field; the other key still signs.
TEST_F(DkimSigner, AKeyThatFailsIsAnErrorAndTheOthersStillSign) {
    core::config c;
    c.dkim_keys = {"example.org:ed:" + ed, "example.org:ed2:" + ed2};
    auto loaded = dkim_keys::load(c);
    ASSERT_TRUE(loaded.has_value()) << loaded.error();
    dkim_key broken = (*loaded)->keys()[0];
    broken.key.alg = dkim::algorithm::rsa_sha256;
    dkim_plan plan = plan_signatures(**loaded, message);
    ASSERT_EQ(plan.keys.size(), 2U);
    std::vector<const dkim_key*> keys{&broken, plan.keys[1]};
    dkim_job job(nullptr, [](void*, dkim_job&) noexcept {});
    job.prepare(*loaded, std::move(keys), std::move(plan.fields), body_hash_of(message), 1796500000);
    job.run(0);
    ASSERT_EQ(job.errors().size(), 1U);
    EXPECT_EQ(job.errors()[0], "d=example.org s=ed a=rsa-sha256: OpenSSL failed to sign") << job.errors()[0];
    EXPECT_EQ(job.summaries(), std::vector<std::string>{"d=example.org s=ed2 a=ed25519-sha256"});
    EXPECT_TRUE(job.fields().starts_with("DKIM-Signature: v=1; a=ed25519-sha256;")) << job.fields();
}

TEST_F(DkimSigner, NobodySignsWithoutAnAuthorKey) {
    core::config c;
    c.dkim_keys = {"example.org:ed:" + ed};
    auto table = dkim_keys::load(c);
    ASSERT_TRUE(table.has_value());
    EXPECT_TRUE(plan_signatures(**table, "From: x@other.test\r\n\r\nb\r\n").keys.empty());
    EXPECT_TRUE(plan_signatures(**table, "Subject: no from\r\n\r\nb\r\n").keys.empty());
    EXPECT_TRUE(plan_signatures(**table, "From: x@[192.0.2.1]\r\n\r\nb\r\n").keys.empty());
}

TEST_F(DkimSigner, ReloadSwapsAllOrNothing) {
    core::config c;
    const std::string rotating = dir + "/rotating.pem";
    std::filesystem::copy_file(ed, rotating);
    c.dkim_keys = {"example.org:r:" + rotating};
    auto signer = dkim_signer::create(c);
    ASSERT_TRUE(signer.has_value()) << signer.error();
    const auto before = (*signer)->keys();
    std::ofstream(rotating, std::ios::trunc) << "-----BEGIN PRIVATE KEY-----\nxx\n-----END PRIVATE KEY-----\n";
    auto refused = (*signer)->reload();
    ASSERT_FALSE(refused.has_value());
    EXPECT_NE(refused.error().find(rotating), std::string::npos) << refused.error();
    EXPECT_EQ((*signer)->keys(), before) << "the table in use stays";
    std::filesystem::copy_file(ed2, rotating, std::filesystem::copy_options::overwrite_existing);
    auto loaded = (*signer)->reload();
    ASSERT_TRUE(loaded.has_value()) << loaded.error();
    EXPECT_NE((*signer)->keys(), before);
    EXPECT_EQ((*signer)->keys()->keys().size(), 1U);
    EXPECT_NE(loaded->find("d=example.org s=r a=ed25519-sha256"), std::string::npos) << *loaded;
    EXPECT_NE(before->keys()[0].key.pkey, (*signer)->keys()->keys()[0].key.pkey);
}

}  // namespace
