// Unit tests of the AUTH wait queue and admission (queue/auth.h), hermetic (no sockets, no
// pool threads): queue::auth_wait_queue (FIFO offers of room, capacity, timeout, leave on
// close or destruction, drain, a full pool stopping the pass), queue::user_failures (pacing,
// not blocking, a user over the limit), and the two together with queue::auth_failures the
// way a shard drives them: ten attempts from one address with good passwords all start,
// none is refused; failures reaching the address's limit while attempts wait answer them
// "blocked".
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "queue/auth.h"

using ringrelay::queue::auth_failures;
using ringrelay::queue::auth_wait_queue;
using ringrelay::queue::auth_waiter;
using ringrelay::queue::user_failures;
using admission = auth_failures::admission;

namespace {

// A waiter whose answer to an offer of room is scripted; records what happened to it.
struct fake_waiter final : auth_waiter {
    explicit fake_waiter(int id_, std::vector<int>* offers_ = nullptr) : id(id_), offers(offers_) {}
    outcome retry_auth(std::int64_t) noexcept override {
        if (offers != nullptr) offers->push_back(id);
        ++offered;
        return answer;
    }
    void auth_wait_over(std::int64_t waited) noexcept override { waited_ms = waited; }
    void auth_wait_cancelled() noexcept override { cancelled = true; }

    int id;
    std::vector<int>* offers;
    outcome answer = outcome::waiting;
    int offered = 0;
    std::int64_t waited_ms = -1;
    bool cancelled = false;
};

}  // namespace

TEST(AuthWaitQueue, OffersRoomInArrivalOrderAndRemovesTheDone) {
    auth_wait_queue q(8, 10'000);
    std::vector<int> offers;
    fake_waiter a(1, &offers), b(2, &offers), c(3, &offers);
    ASSERT_TRUE(q.push(a, 0));
    ASSERT_TRUE(q.push(b, 1));
    ASSERT_TRUE(q.push(c, 2));
    EXPECT_FALSE(q.push(a, 3)) << "a waiter is in one queue once";
    EXPECT_EQ(q.size(), 3u);
    b.answer = auth_waiter::outcome::done;
    q.pump(100);
    EXPECT_EQ(offers, (std::vector<int>{1, 2, 3}));
    EXPECT_TRUE(a.waiting());
    EXPECT_FALSE(b.waiting()) << "done: it left";
    EXPECT_TRUE(c.waiting());
    EXPECT_EQ(q.size(), 2u);
    offers.clear();
    q.pump(200);
    EXPECT_EQ(offers, (std::vector<int>{1, 3})) << "still in arrival order";
}

TEST(AuthWaitQueue, FullQueueRefuses) {
    auth_wait_queue q(2, 10'000);
    fake_waiter a(1), b(2), c(3);
    EXPECT_TRUE(q.push(a, 0));
    EXPECT_TRUE(q.push(b, 0));
    EXPECT_FALSE(q.push(c, 0)) << "capacity 2";
    EXPECT_FALSE(c.waiting());
    a.leave();
    EXPECT_TRUE(q.push(c, 0)) << "room again once one left";
    auth_wait_queue none(0, 10'000);
    fake_waiter d(4);
    EXPECT_FALSE(none.push(d, 0)) << "--auth-queue-size 0: nothing waits";
}

TEST(AuthWaitQueue, TimeoutAnswersWithTheWaitAndOffersNoRoom) {
    auth_wait_queue q(8, 10'000);
    fake_waiter a(1), b(2);
    ASSERT_TRUE(q.push(a, 1'000));
    ASSERT_TRUE(q.push(b, 5'000));
    q.pump(10'999);
    EXPECT_TRUE(a.waiting()) << "9,999 ms: not yet";
    q.pump(11'000);
    EXPECT_FALSE(a.waiting());
    EXPECT_EQ(a.waited_ms, 10'000);
    EXPECT_EQ(a.offered, 1) << "no offer once its time is up";
    EXPECT_TRUE(b.waiting());
    EXPECT_EQ(b.waited_ms, -1);
    EXPECT_EQ(q.size(), 1u);
}

TEST(AuthWaitQueue, PoolFullStopsThePassButNotTheTimeouts) {
    auth_wait_queue q(8, 1'000);
    fake_waiter a(1), b(2), c(3);
    ASSERT_TRUE(q.push(a, 500));
    ASSERT_TRUE(q.push(b, 500));
    ASSERT_TRUE(q.push(c, 0));  // (pushed last, but the oldest: its time is up first)
    a.answer = auth_waiter::outcome::pool_full;
    b.answer = auth_waiter::outcome::done;
    q.pump(1'000);
    EXPECT_EQ(a.offered, 1);
    EXPECT_EQ(b.offered, 0) << "the pool refused the one before: no offer to later ones";
    EXPECT_TRUE(b.waiting());
    EXPECT_FALSE(c.waiting()) << "timeouts still run";
    EXPECT_EQ(c.waited_ms, 1'000);
}

TEST(AuthWaitQueue, LeavingAndDestructionUnlink) {
    auth_wait_queue q(8, 10'000);
    std::vector<int> offers;
    fake_waiter a(1, &offers);
    {
        auto gone = std::make_unique<fake_waiter>(2, &offers);
        fake_waiter c(3, &offers);
        ASSERT_TRUE(q.push(a, 0));
        ASSERT_TRUE(q.push(*gone, 0));
        ASSERT_TRUE(q.push(c, 0));
        gone.reset();  // a connection destroyed while it waits (shard teardown)
        EXPECT_EQ(q.size(), 2u);
        c.leave();  // a connection closed while it waits
        EXPECT_FALSE(c.waiting());
        c.leave();  // idempotent
        EXPECT_EQ(q.size(), 1u);
    }
    q.pump(1);
    EXPECT_EQ(offers, (std::vector<int>{1}));
}

TEST(AuthWaitQueue, DrainTellsEveryWaiter) {
    fake_waiter a(1), b(2);
    {
        auth_wait_queue q(8, 10'000);
        ASSERT_TRUE(q.push(a, 0));
        ASSERT_TRUE(q.push(b, 0));
        q.drain();
        EXPECT_TRUE(q.empty());
        EXPECT_TRUE(a.cancelled && b.cancelled);
        EXPECT_FALSE(a.waiting() || b.waiting());
        ASSERT_TRUE(q.push(a, 0));
    }  // the queue goes first: it unlinks what is left without telling it
    EXPECT_FALSE(a.waiting());
}

TEST(UserFailures, PacedNotBlockedOverTheLimit) {
    user_failures u(3, 60'000, 1'000);
    const std::size_t alice = u.slot_of("alice");
    const std::int64_t t0 = 5'000'000;
    for (int i = 0; i < 10; ++i) EXPECT_TRUE(u.try_start(alice, t0)) << "below the limit nothing waits";
    EXPECT_FALSE(u.end(alice, true, t0));
    EXPECT_FALSE(u.end(alice, false, t0)) << "successes do not count";
    EXPECT_FALSE(u.end(alice, true, t0));
    EXPECT_TRUE(u.end(alice, true, t0)) << "the third failure reaches the limit";
    EXPECT_TRUE(u.paced(alice, t0));
    // Paced: one check starts per second, whatever the verdicts; never a refusal.
    EXPECT_TRUE(u.try_start(alice, t0));
    EXPECT_FALSE(u.try_start(alice, t0));
    EXPECT_FALSE(u.try_start(alice, t0 + 999));
    EXPECT_TRUE(u.try_start(alice, t0 + 1'000));
    EXPECT_FALSE(u.try_start(alice, t0 + 1'500));
    EXPECT_TRUE(u.end(alice, false, t0 + 1'500)) << "a success does not lift the pacing either";
    // Other names are not paced (unless they share alice's slot: check a few).
    int free_others = 0;
    for (const char* other : {"bob", "carol", "dave", "alice2"}) free_others += u.paced(u.slot_of(other), t0) ? 0 : 1;
    EXPECT_GE(free_others, 3);
    // The window has passed: no pacing.
    EXPECT_FALSE(u.paced(alice, t0 + 60'000));
    EXPECT_TRUE(u.try_start(alice, t0 + 60'000));
    EXPECT_TRUE(u.try_start(alice, t0 + 60'000));
}

TEST(UserFailures, NamesAreExactBytes) {
    user_failures u(1, 60'000, 1'000);
    EXPECT_EQ(u.slot_of("alice"), u.slot_of(std::string("alice")));
    (void)u.end(u.slot_of("alice"), true, 0);
    using namespace std::string_view_literals;
    int distinct = 0;
    for (std::string_view other : {"Alice"sv, "alice "sv, "alic"sv, "alice\0"sv, "alice\0x"sv})
        distinct += u.paced(u.slot_of(other), 0) ? 0 : 1;
    EXPECT_GE(distinct, 4);
    EXPECT_TRUE(u.paced(u.slot_of("alice\0"sv.substr(0, 5)), 0));
}

namespace {

// One simulated connection, driven the way queue::connection drives the real ones: admission
// (address, then user), then a "pool" that is a vector of checks in flight.
struct simulated_client final : auth_waiter {
    simulated_client(auth_failures& f, user_failures& u, std::size_t slot, std::size_t user)
        : failures(f), users(u), address_slot(slot), user_slot(user) {}

    // Like connection::try_start_auth without the pool.
    bool try_start(std::int64_t now) {
        switch (failures.begin(address_slot, now)) {
        case admission::blocked: answer = "421"; return true;
        case admission::busy: return false;
        case admission::ok: break;
        }
        if (!users.try_start(user_slot, now)) {
            failures.cancel(address_slot);
            return false;
        }
        in_flight = true;
        return true;
    }
    outcome retry_auth(std::int64_t now) noexcept override { return try_start(now) ? outcome::done : outcome::waiting; }
    void auth_wait_over(std::int64_t) noexcept override { answer = "454 waited"; }
    void auth_wait_cancelled() noexcept override { answer = "454 stopping"; }
    // The check ends with this verdict.
    void finish(bool good, std::int64_t now) {
        in_flight = false;
        const bool blocked = failures.end(address_slot, !good, now);
        (void)users.end(user_slot, !good, now);
        answer = good ? "235" : blocked ? "421" : "535";
    }

    auth_failures& failures;
    user_failures& users;
    std::size_t address_slot, user_slot;
    bool in_flight = false;
    std::string answer;
};

}  // namespace

// The issue: a pool of ten connections from one address, good passwords, all at once. Two
// start, eight wait; each check that ends lets a waiter in; all ten get 235, none 454.
TEST(AuthAdmission, TenGoodAttemptsFromOneAddressAllSucceed) {
    auth_failures f(10, 600'000);
    user_failures u(10, 600'000, 1'000);
    auth_wait_queue q(256, 10'000);
    const std::size_t addr = f.slot_of("127.0.0.1");
    std::vector<std::unique_ptr<simulated_client>> clients;
    std::int64_t now = 1'000'000;
    int started_at_once = 0;
    for (int i = 0; i < 10; ++i) {
        clients.push_back(std::make_unique<simulated_client>(f, u, addr, u.slot_of("alice")));
        simulated_client& c = *clients.back();
        if (q.empty() && c.try_start(now)) {
            ++started_at_once;
        } else {
            ASSERT_TRUE(q.push(c, now));
        }
    }
    EXPECT_EQ(started_at_once, 2) << "the in-flight cap still holds";
    EXPECT_EQ(q.size(), 8u);
    // The checks end one by one (50 ms each); the shard pumps after each.
    for (int round = 0; round < 20 && !q.empty(); ++round) {
        now += 50;
        for (auto& c : clients) {
            if (c->in_flight) {
                c->finish(true, now);
                break;
            }
        }
        q.pump(now);
        int in_flight = 0;
        for (auto& c : clients) in_flight += c->in_flight ? 1 : 0;
        EXPECT_LE(in_flight, 2);
    }
    for (auto& c : clients)
        if (c->in_flight) c->finish(true, now);
    EXPECT_TRUE(q.empty());
    for (std::size_t i = 0; i < clients.size(); ++i) EXPECT_EQ(clients[i]->answer, "235") << "client " << i;
    EXPECT_EQ(f.in_flight(addr), 0u);
}

// Wrong passwords from one address, eight at once, limit 5: the checks that run stop at the
// limit; the attempts still waiting when it is reached get the blocked answer (421), not 454.
TEST(AuthAdmission, FailuresReachingTheLimitAnswerTheWaitersBlocked) {
    auth_failures f(5, 600'000);
    user_failures u(100, 600'000, 1'000);
    auth_wait_queue q(256, 10'000);
    const std::size_t addr = f.slot_of("192.0.2.50");
    std::vector<std::unique_ptr<simulated_client>> clients;
    std::int64_t now = 2'000'000;
    for (int i = 0; i < 8; ++i) {
        clients.push_back(std::make_unique<simulated_client>(f, u, addr, u.slot_of("mallory")));
        if (!(q.empty() && clients.back()->try_start(now))) {
            ASSERT_TRUE(q.push(*clients.back(), now));
        }
    }
    int checks = 0;
    for (int round = 0; round < 50; ++round) {
        now += 20;
        for (auto& c : clients) {
            if (c->in_flight) {
                c->finish(false, now);
                ++checks;
                break;
            }
        }
        q.pump(now);
    }
    EXPECT_TRUE(q.empty());
    EXPECT_LE(checks, 5) << "no more checks than the limit";
    int c535 = 0, c421 = 0;
    for (auto& c : clients) {
        c535 += c->answer == "535";
        c421 += c->answer == "421";
        EXPECT_TRUE(c->answer == "535" || c->answer == "421") << c->answer;
    }
    EXPECT_EQ(c535 + c421, 8);
    EXPECT_EQ(c535, 4) << "four failures below the limit, the fifth reaches it";
}

// A user paced by failures from many addresses: an attempt for that user waits for its turn
// (one a second) and then gets its real verdict, 235 for the right password.
TEST(AuthAdmission, PacedUserWaitsForItsTurnAndStillSucceeds) {
    auth_failures f(10, 600'000);
    user_failures u(3, 600'000, 1'000);
    auth_wait_queue q(256, 10'000);
    const std::size_t alice = u.slot_of("alice");
    std::int64_t now = 3'000'000;
    for (const char* attacker : {"198.51.100.1", "198.51.100.2", "198.51.100.3"}) {
        simulated_client c(f, u, f.slot_of(attacker), alice);
        ASSERT_TRUE(c.try_start(now));
        c.finish(false, now);
    }
    ASSERT_TRUE(u.paced(alice, now));
    simulated_client first(f, u, f.slot_of("198.51.100.4"), alice);
    ASSERT_TRUE(first.try_start(now)) << "the first turn is free";
    first.finish(false, now);
    simulated_client real(f, u, f.slot_of("203.0.113.9"), alice);
    EXPECT_FALSE(real.try_start(now + 10)) << "the next turn is a second later";
    ASSERT_TRUE(q.push(real, now + 10));
    for (std::int64_t t = now + 30; t < now + 1'000; t += 20) q.pump(t);
    EXPECT_TRUE(real.waiting());
    q.pump(now + 1'000);
    EXPECT_FALSE(real.waiting());
    ASSERT_TRUE(real.in_flight);
    real.finish(true, now + 1'050);
    EXPECT_EQ(real.answer, "235");
}

// Waiting too long or a full queue are the only 454s.
TEST(AuthAdmission, OnlyTheDeadlineOrAFullQueueRefuse) {
    auth_failures f(10, 600'000);
    user_failures u(10, 600'000, 1'000);
    auth_wait_queue q(1, 10'000);
    const std::size_t addr = f.slot_of("192.0.2.60");
    const std::size_t bob = u.slot_of("bob");
    simulated_client a(f, u, addr, bob), b(f, u, addr, bob), c(f, u, addr, bob), d(f, u, addr, bob);
    ASSERT_TRUE(a.try_start(0));
    ASSERT_TRUE(b.try_start(0));
    ASSERT_FALSE(c.try_start(0));
    ASSERT_TRUE(q.push(c, 0));
    EXPECT_FALSE(q.push(d, 0)) << "queue full: the caller answers 454";
    q.pump(9'999);
    EXPECT_TRUE(c.waiting());
    q.pump(10'000);  // the two checks never ended (a stuck pool): the wait ends
    EXPECT_EQ(c.answer, "454 waited");
    a.finish(true, 10'000);
    b.finish(true, 10'000);
    EXPECT_EQ(f.in_flight(addr), 0u);
}
