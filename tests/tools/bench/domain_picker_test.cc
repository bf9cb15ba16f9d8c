// tests/tools/bench/domain_picker_test.cc: recipient domains are chosen in proportion to their
// --domains weights, deterministically for a given seed.
#include "tools/bench/domain_picker.h"

#include <gtest/gtest.h>

#include <vector>

namespace ringrelay::bench {
namespace {

std::vector<std::uint64_t> counts(const std::vector<weighted_domain>& domains, std::uint64_t seed, int picks) {
    domain_picker p(domains, seed);
    std::vector<std::uint64_t> n(domains.size(), 0);
    for (int i = 0; i < picks; ++i) {
        const std::size_t k = p.pick();
        EXPECT_LT(k, domains.size());
        if (k < n.size()) ++n[k];
    }
    return n;
}

TEST(DomainPicker, DistributionFollowsTheWeights) {
    const std::vector<weighted_domain> domains{
        {"gmail.com", 5}, {"yahoo.com", 3}, {"example.org", 1}, {"rare.example", 1}};
    constexpr int picks = 200'000;
    const auto n = counts(domains, 1, picks);
    const double total_weight = 10;
    for (std::size_t i = 0; i < domains.size(); ++i) {
        const double expected = picks * domains[i].weight / total_weight;
        // 200k draws: one standard deviation is under 0.6% of the expected count here; 3% is ~6 sigma.
        EXPECT_NEAR(static_cast<double>(n[i]), expected, expected * 0.03) << domains[i].name;
    }
}

TEST(DomainPicker, ExtremeWeightsStillPickTheLightDomain) {
    const std::vector<weighted_domain> domains{{"heavy.example", 1'000'000}, {"light.example", 1}};
    const auto n = counts(domains, 7, 5'000'000);
    EXPECT_GT(n[1], 0u);
    EXPECT_LT(n[1], 30u);  // expected 5
}

TEST(DomainPicker, SameSeedSameSequenceOtherSeedOtherSequence) {
    const std::vector<weighted_domain> domains{{"a.example", 1}, {"b.example", 1}, {"c.example", 1}};
    domain_picker a(domains, 42), b(domains, 42), c(domains, 43);
    int same = 0, differ = 0;
    for (int i = 0; i < 1000; ++i) {
        const std::size_t x = a.pick();
        EXPECT_EQ(x, b.pick());
        (x == c.pick() ? same : differ)++;
    }
    EXPECT_GT(differ, 500);  // independent sequences agree about a third of the time
}

TEST(DomainPicker, SingleDomainIsAlwaysPicked) {
    const std::vector<weighted_domain> domains{{"only.example", 3}};
    domain_picker p(domains, 5);
    for (int i = 0; i < 100; ++i) ASSERT_EQ(p.pick(), 0u);
}

}  // namespace
}  // namespace ringrelay::bench
