// tests/queue/tls_client_policy_test.cc: queue/tls_client_policy, hermetic (a fake clock, no
// network): what each policy asks of a new connection, the TLS-broken plaintext memory and its
// expiry, client contexts (a CA file that does not load), and the session cache: handed out
// once, never past tls_session_lifetime_ms, never across a reload (generation).
#include "queue/tls_client_policy.h"

#include <gtest/gtest.h>
#include <openssl/ssl.h>

#include <atomic>
#include <string>

using namespace ringrelay;
using namespace ringrelay::queue;
using policy = core::config::tls_policy;

namespace {

struct fake_clock final : core::time_source {
    std::int64_t now_ms = 5'000'000;
    [[nodiscard]] std::int64_t monotonic_ms() const noexcept override { return now_ms; }
    [[nodiscard]] std::int64_t unix_us() const noexcept override { return 1'700'000'000'000'000 + now_ms * 1000; }
};

// A session OpenSSL calls resumable: one with a session id.
core::tls_saved_session resumable_session() {
    SSL_SESSION* s = SSL_SESSION_new();
    const unsigned char id[4] = {1, 2, 3, 4};
    EXPECT_EQ(SSL_SESSION_set1_id(s, id, sizeof id), 1);
    return core::tls_saved_session(s);
}

struct fixture {
    core::config config;
    std::atomic<std::uint64_t> generation{0};
    fake_clock clock;
    tls_client_policy tls{config, generation, clock};
};

TEST(TlsClientPolicy, WhatEachPolicyAsks) {
    fixture f;
    auto c = f.tls.for_connection(policy::disabled, "192.0.2.1:25");
    EXPECT_EQ(c.starttls, protocol::tls_use::never);
    c = f.tls.for_connection(policy::opportunistic, "192.0.2.1:25");
    EXPECT_EQ(c.starttls, protocol::tls_use::when_offered);
    EXPECT_EQ(c.verify, core::tls_verify::none);
    c = f.tls.for_connection(policy::required, "192.0.2.1:25");
    EXPECT_EQ(c.starttls, protocol::tls_use::required);
    EXPECT_EQ(c.verify, core::tls_verify::none);
    c = f.tls.for_connection(policy::verify, "192.0.2.1:25");
    EXPECT_EQ(c.starttls, protocol::tls_use::required);
    EXPECT_EQ(c.verify, core::tls_verify::peer);
}

// An opportunistic handshake that failed: plaintext to that address (only) for
// tls_fallback_ms; required and verify never fall back.
TEST(TlsClientPolicy, BrokenAddressGetsPlaintextUntilTheFallbackEnds) {
    fixture f;
    f.tls.mark_broken("192.0.2.1:25");
    EXPECT_EQ(f.tls.for_connection(policy::opportunistic, "192.0.2.1:25").starttls, protocol::tls_use::never);
    EXPECT_EQ(f.tls.for_connection(policy::opportunistic, "192.0.2.2:25").starttls, protocol::tls_use::when_offered);
    EXPECT_EQ(f.tls.for_connection(policy::opportunistic, "").starttls, protocol::tls_use::when_offered);
    EXPECT_EQ(f.tls.for_connection(policy::required, "192.0.2.1:25").starttls, protocol::tls_use::required);
    EXPECT_EQ(f.tls.for_connection(policy::verify, "192.0.2.1:25").starttls, protocol::tls_use::required);
    f.clock.now_ms += tls_fallback_ms - 1;
    EXPECT_EQ(f.tls.for_connection(policy::opportunistic, "192.0.2.1:25").starttls, protocol::tls_use::never);
    f.clock.now_ms += 1;
    EXPECT_EQ(f.tls.for_connection(policy::opportunistic, "192.0.2.1:25").starttls, protocol::tls_use::when_offered);
}

TEST(TlsClientPolicy, ContextsAreMadeOnceAndABadCaFileSaysWhy) {
    fixture f;
    std::string error;
    core::tls_context* any = f.tls.client_context(core::tls_verify::none, error);
    ASSERT_NE(any, nullptr) << error;
    EXPECT_EQ(f.tls.client_context(core::tls_verify::none, error), any);
    f.config.outbound_ca_file = "/nonexistent/ca.pem";
    EXPECT_EQ(f.tls.client_context(core::tls_verify::peer, error), nullptr);
    EXPECT_NE(error.find("/nonexistent/ca.pem"), std::string::npos) << error;
    // The error is kept (a CA file does not heal by itself) until a reload.
    std::string again;
    EXPECT_EQ(f.tls.client_context(core::tls_verify::peer, again), nullptr);
    EXPECT_EQ(again, error);
    f.config.outbound_ca_file.clear();
    f.generation.fetch_add(1);
    f.tls.tick();
    std::string none;
    EXPECT_NE(f.tls.client_context(core::tls_verify::peer, none), nullptr) << none;
}

TEST(TlsClientPolicy, SessionIsHandedOutOnce) {
    fixture f;
    f.tls.keep_session("mx|192.0.2.1:25|none", {resumable_session(), f.clock.now_ms, f.tls.generation()});
    EXPECT_FALSE(f.tls.take_session("other").has_value());
    auto r = f.tls.take_session("mx|192.0.2.1:25|none");
    ASSERT_TRUE(r.has_value());
    EXPECT_TRUE(r->session.resumable());
    EXPECT_FALSE(f.tls.take_session("mx|192.0.2.1:25|none").has_value()) << "a ticket is for one connection";
    // Not resumable: not kept.
    f.tls.keep_session("k", {core::tls_saved_session(), f.clock.now_ms, f.tls.generation()});
    EXPECT_FALSE(f.tls.take_session("k").has_value());
}

TEST(TlsClientPolicy, SessionExpiresAnHourAfterItsFullHandshake) {
    fixture f;
    f.tls.keep_session("a", {resumable_session(), f.clock.now_ms, f.tls.generation()});
    f.tls.keep_session("b", {resumable_session(), f.clock.now_ms, f.tls.generation()});
    f.clock.now_ms += tls_session_lifetime_ms - 1;
    EXPECT_TRUE(f.tls.take_session("a").has_value());
    f.clock.now_ms += 1;
    EXPECT_FALSE(f.tls.take_session("b").has_value());
}

TEST(TlsClientPolicy, ReloadDropsSessionsAndRefusesOldOnes) {
    fixture f;
    f.tls.keep_session("a", {resumable_session(), f.clock.now_ms, f.tls.generation()});
    f.generation.fetch_add(1);
    EXPECT_EQ(f.tls.generation(), 0U) << "the policy sees a reload at its next tick";
    f.tls.tick();
    EXPECT_EQ(f.tls.generation(), 1U);
    EXPECT_FALSE(f.tls.take_session("a").has_value());
    // A session made under the old generation (a connection that was in TLS during the
    // reload) is not kept.
    f.tls.keep_session("b", {resumable_session(), f.clock.now_ms, 0});
    EXPECT_FALSE(f.tls.take_session("b").has_value());
    f.tls.keep_session("c", {resumable_session(), f.clock.now_ms, 1});
    EXPECT_TRUE(f.tls.take_session("c").has_value());
}

}  // namespace
