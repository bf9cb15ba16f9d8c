// tests/tools/sink/faults_test.cc: ringrelay-sink's fault draws: certain outcomes at rate 0
// and 1, repeatable with a fixed seed, and close to the configured rates over many draws.
#include "tools/sink/faults.h"

#include <gtest/gtest.h>

#include <array>
#include <vector>

namespace ringrelay::sink {
namespace {

std::array<int, 4> count(fault_picker& p, int draws) {
    std::array<int, 4> n{};
    for (int i = 0; i < draws; ++i) ++n[static_cast<std::size_t>(p.next())];
    return n;
}

TEST(FaultPicker, ZeroRatesAlwaysAccept) {
    fault_picker p(fault_rates{}, 1);
    EXPECT_FALSE(p.active());
    const auto n = count(p, 10000);
    EXPECT_EQ(n[static_cast<std::size_t>(verdict::accept)], 10000);
}

TEST(FaultPicker, RateOneIsCertain) {
    const std::pair<fault_rates, verdict> cases[] = {
        {{.defer = 1}, verdict::defer},
        {{.reject = 1}, verdict::reject},
        {{.disconnect = 1}, verdict::disconnect},
    };
    for (const auto& [rates, expected] : cases) {
        fault_picker p(rates, 7);
        EXPECT_TRUE(p.active());
        const auto n = count(p, 10000);
        EXPECT_EQ(n[static_cast<std::size_t>(expected)], 10000);
    }
}

TEST(FaultPicker, FixedSeedRepeatsItsSequence) {
    const fault_rates rates{.defer = 0.3, .reject = 0.3, .disconnect = 0.3};
    fault_picker a(rates, 42);
    fault_picker b(rates, 42);
    fault_picker c(rates, 43);
    std::vector<verdict> va, vb, vc;
    for (int i = 0; i < 1000; ++i) {
        va.push_back(a.next());
        vb.push_back(b.next());
        vc.push_back(c.next());
    }
    EXPECT_EQ(va, vb);
    EXPECT_NE(va, vc);
}

TEST(FaultPicker, DrawsFollowTheConfiguredRates) {
    // 200,000 draws: the binomial standard deviation of each share is below 0.1%; a 0.5%
    // tolerance fails only on a real bias (the seed is fixed anyway).
    constexpr int draws = 200000;
    fault_picker p(fault_rates{.defer = 0.2, .reject = 0.1, .disconnect = 0.05}, 12345);
    const auto n = count(p, draws);
    auto share = [&](verdict v) { return static_cast<double>(n[static_cast<std::size_t>(v)]) / draws; };
    EXPECT_NEAR(share(verdict::defer), 0.2, 0.005);
    EXPECT_NEAR(share(verdict::reject), 0.1, 0.005);
    EXPECT_NEAR(share(verdict::disconnect), 0.05, 0.005);
    EXPECT_NEAR(share(verdict::accept), 0.65, 0.005);
}

TEST(FaultPicker, RatesAddingUpToOneNeverAccept) {
    fault_picker p(fault_rates{.defer = 0.5, .reject = 0.25, .disconnect = 0.25}, 9);
    const auto n = count(p, 50000);
    EXPECT_EQ(n[static_cast<std::size_t>(verdict::accept)], 0);
    EXPECT_GT(n[static_cast<std::size_t>(verdict::disconnect)], 0);
}

}  // namespace
}  // namespace ringrelay::sink
