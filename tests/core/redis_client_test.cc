// tests/core/redis_client_test.cc: core/redis_client.h (issue 19) against a real redis-server the
// test starts (per test, on a free loopback port and a unix socket in a temporary directory;
// stopped by PID). The reactor loop runs in the test thread. Skipped when redis-server is not
// installed (Debian package redis-server) or io_uring is unavailable. Waits are "until it
// happened" loops with a bound, never timing assertions.
#include "core/redis_client.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "core/clock.h"
#include "tests/core/redis_harness.h"

using namespace ringrelay::core;
using ringrelay::redis_test::free_port;
using ringrelay::redis_test::redis_server;

namespace {

struct answer {
    std::uint64_t tag;
    int type;  // REDIS_REPLY_*; -1 for no reply
    std::string text;  // string/status/error text, or the integer, or the failure
};

struct recorder final : redis_handler {
    std::vector<answer> answers;
    void redis_reply(std::uint64_t tag, const redisReply* r, std::string_view failure) noexcept override {
        if (r == nullptr) {
            answers.push_back({tag, -1, std::string(failure)});
        } else if (r->type == REDIS_REPLY_INTEGER) {
            answers.push_back({tag, r->type, std::to_string(r->integer)});
        } else if (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS || r->type == REDIS_REPLY_ERROR) {
            answers.push_back({tag, r->type, std::string(r->str, r->len)});
        } else {
            answers.push_back({tag, r->type, {}});
        }
    }
};

class RedisClient : public testing::Test {
protected:
    void SetUp() override {
        if (_reactor.init(64, probe_kernel_features())) GTEST_SKIP() << "io_uring unavailable";
        if (!_server.start()) GTEST_SKIP() << "redis-server not installed (apt install redis-server)";
    }

    std::unique_ptr<redis_client> make(redis_url url) {
        return std::make_unique<redis_client>(_reactor, std::move(url),
                                              redis_client_config{.request_timeout_ms = 1000, .backoff_min_ms = 20,
                                                                  .backoff_max_ms = 200, .label = "redis (test)"});
    }
    // A client made and started, once it is up (null, with a failure, if it does not come up).
    std::unique_ptr<redis_client> connected(redis_url url) {
        auto c = make(std::move(url));
        c->start(monotonic_ms());
        if (!run_until(*c, [&] { return c->up(); })) {
            ADD_FAILURE() << "not up: " << c->last_error();
            return nullptr;
        }
        return c;
    }
    redis_url tcp(unsigned db = 0) { return redis_url{.host = "127.0.0.1", .port = _server.port(), .db = db}; }

    // Runs the loop (ticking the client) until `done` or 10 s.
    bool run_until(redis_client& c, const std::function<bool()>& done) {
        const std::int64_t end = monotonic_ms() + 10'000;
        while (!done()) {
            if (monotonic_ms() > end) return false;
            _reactor.run_once(10);
            c.tick(monotonic_ms());
        }
        return true;
    }

    void stop(redis_client& c) {
        c.shutdown();
        EXPECT_TRUE(run_until(c, [&] { return c.idle(); }));
    }

    reactor _reactor;
    redis_server _server;
    recorder _rec;
};

TEST_F(RedisClient, RepliesComeBackInOrderOverTcp) {
    auto c = connected(tcp());
    ASSERT_NE(c, nullptr);
    const std::string_view set[] = {"SET", "k", "v1"};
    const std::string_view get[] = {"GET", "k"};
    const std::string_view incr[] = {"INCRBY", "n", "5"};
    ASSERT_TRUE(c->command(set, &_rec, 1));
    ASSERT_TRUE(c->command(get, &_rec, 2));
    ASSERT_TRUE(c->command(incr, &_rec, 3));
    EXPECT_TRUE(_rec.answers.empty());  // never inside command()
    ASSERT_TRUE(run_until(*c, [&] { return _rec.answers.size() == 3; }));
    EXPECT_EQ(_rec.answers[0].tag, 1u);
    EXPECT_EQ(_rec.answers[0].text, "OK");
    EXPECT_EQ(_rec.answers[1].text, "v1");
    EXPECT_EQ(_rec.answers[2].text, "5");
    EXPECT_EQ(_server.get("k"), "v1");
    stop(*c);
}

TEST_F(RedisClient, ErrorReplyReachesTheHandler) {
    auto c = connected(tcp());
    ASSERT_NE(c, nullptr);
    const std::string_view set[] = {"SET", "s", "text"};
    const std::string_view incr[] = {"INCR", "s"};
    ASSERT_TRUE(c->command(set, &_rec, 1));
    ASSERT_TRUE(c->command(incr, &_rec, 2));
    ASSERT_TRUE(run_until(*c, [&] { return _rec.answers.size() == 2; }));
    EXPECT_EQ(_rec.answers[1].type, REDIS_REPLY_ERROR);
    EXPECT_TRUE(_rec.answers[1].text.starts_with("ERR")) << _rec.answers[1].text;
    EXPECT_TRUE(c->up());  // an error reply is not a lost connection
    stop(*c);
}

TEST_F(RedisClient, EvalShaFallsBackToEvalOnNoScript) {
    auto c = connected(tcp());
    ASSERT_NE(c, nullptr);
    const redis_script script("return redis.call('INCRBY', KEYS[1], ARGV[1])");
    EXPECT_EQ(script.sha1().size(), 40u);
    const std::string_view keys[] = {"counter"};
    const std::string_view args[] = {"7"};
    const std::uint64_t before = c->stats().commands;
    ASSERT_TRUE(c->eval(script, keys, args, &_rec, 1));  // unknown to a fresh Redis: NOSCRIPT, then EVAL
    ASSERT_TRUE(run_until(*c, [&] { return _rec.answers.size() == 1; }));
    EXPECT_EQ(_rec.answers[0].text, "7");
    EXPECT_EQ(c->stats().commands - before, 2u);
    ASSERT_TRUE(c->eval(script, keys, args, &_rec, 2));  // cached now: EVALSHA alone
    ASSERT_TRUE(run_until(*c, [&] { return _rec.answers.size() == 2; }));
    EXPECT_EQ(_rec.answers[1].text, "14");
    EXPECT_EQ(c->stats().commands - before, 3u);
    stop(*c);
}

TEST_F(RedisClient, ScriptErrorIsAnErrorReply) {
    auto c = connected(tcp());
    ASSERT_NE(c, nullptr);
    const redis_script script("return redis.call('NOSUCHCOMMAND')");
    ASSERT_TRUE(c->eval(script, {}, {}, &_rec, 1));
    ASSERT_TRUE(run_until(*c, [&] { return _rec.answers.size() == 1; }));
    EXPECT_EQ(_rec.answers[0].type, REDIS_REPLY_ERROR);
    EXPECT_EQ(c->stats().commands, 2u);  // EVALSHA, EVAL: the script's own error is not retried
    stop(*c);
}

TEST_F(RedisClient, SelectsTheDatabaseOfTheUrl) {
    auto c = connected(tcp(3));
    ASSERT_NE(c, nullptr);
    const std::string_view set[] = {"SET", "where", "db3"};
    ASSERT_TRUE(c->command(set, &_rec, 1));
    ASSERT_TRUE(run_until(*c, [&] { return _rec.answers.size() == 1; }));
    EXPECT_EQ(_server.get("where", 3), "db3");
    EXPECT_EQ(_server.get("where", 0), "<nil>");
    stop(*c);
}

TEST_F(RedisClient, TalksOverTheUnixSocket) {
    auto c = connected(redis_url{.transport = redis_url::kind::unix_socket, .path = _server.socket_path()});
    ASSERT_NE(c, nullptr);
    const std::string_view set[] = {"SET", "via", "unix"};
    ASSERT_TRUE(c->command(set, &_rec, 1));
    ASSERT_TRUE(run_until(*c, [&] { return _rec.answers.size() == 1; }));
    EXPECT_EQ(_server.get("via"), "unix");
    stop(*c);
}

TEST_F(RedisClient, RefusesWhileDownAndReconnectsWhenRedisReturns) {
    auto c = connected(tcp());
    ASSERT_NE(c, nullptr);
    const std::string_view ping[] = {"PING"};
    ASSERT_TRUE(c->command(ping, &_rec, 1));
    ASSERT_TRUE(run_until(*c, [&] { return _rec.answers.size() == 1; }));
    _server.stop();
    ASSERT_TRUE(run_until(*c, [&] { return c->state() == redis_state::down; }));
    EXPECT_FALSE(c->last_error().empty());
    EXPECT_FALSE(c->command(ping, &_rec, 2));  // refused at once: the caller falls back
    const std::uint64_t connects = c->stats().connects;
    ASSERT_TRUE(_server.start());
    ASSERT_TRUE(run_until(*c, [&] { return c->up(); })) << c->last_error();
    EXPECT_EQ(c->stats().connects, connects + 1);
    ASSERT_TRUE(c->command(ping, &_rec, 3));
    ASSERT_TRUE(run_until(*c, [&] { return _rec.answers.size() == 2; }));
    EXPECT_EQ(_rec.answers[1].tag, 3u);
    EXPECT_EQ(_rec.answers[1].text, "PONG");
    stop(*c);
}

TEST_F(RedisClient, RequestsInFlightFailWhenTheConnectionIsLost) {
    auto c = connected(tcp());
    ASSERT_NE(c, nullptr);
    // BLPOP holds the reply back; Redis is killed while it waits.
    const std::string_view blpop[] = {"BLPOP", "never", "0"};
    ASSERT_TRUE(c->command(blpop, &_rec, 1));
    for (int i = 0; i < 5; ++i) _reactor.run_once(10);  // sent
    _server.stop();
    ASSERT_TRUE(run_until(*c, [&] { return _rec.answers.size() == 1; }));
    EXPECT_EQ(_rec.answers[0].type, -1);
    EXPECT_FALSE(_rec.answers[0].text.empty());
    stop(*c);
}

TEST_F(RedisClient, CancelledHandlerIsNotCalled) {
    auto c = connected(tcp());
    ASSERT_NE(c, nullptr);
    recorder other;
    const std::string_view ping[] = {"PING"};
    ASSERT_TRUE(c->command(ping, &_rec, 1));
    ASSERT_TRUE(c->command(ping, &other, 2));
    c->cancel(&_rec);
    ASSERT_TRUE(run_until(*c, [&] { return other.answers.size() == 1; }));
    EXPECT_TRUE(_rec.answers.empty());
    stop(*c);
}

TEST_F(RedisClient, UnreachableRedisIsDownWithTheReason) {
    auto c = make(redis_url{.host = "127.0.0.1", .port = free_port()});
    c->start(monotonic_ms());
    ASSERT_TRUE(run_until(*c, [&] { return c->state() == redis_state::down; }));
    EXPECT_FALSE(c->last_error().empty());
    const std::string_view ping[] = {"PING"};
    EXPECT_FALSE(c->command(ping, &_rec, 1));
    stop(*c);
}

}  // namespace
