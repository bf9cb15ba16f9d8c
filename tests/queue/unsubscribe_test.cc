// Unit tests of the one-click unsubscribe links (queue/unsubscribe.h, RFC 8058; issue 18): tokens
// verify and name their pair, any change to a token (or another key) fails, the key and the URL
// are checked, the fields are what RFC 8058 §3.1 asks, and List-Unsubscribe is found in any case.
#include "queue/unsubscribe.h"

#include <gtest/gtest.h>

#include <string>

using namespace ringrelay::queue;

namespace {

const std::string key(40, 'k');

std::unique_ptr<unsubscribe_links> make(std::string k = key) {
    auto links = unsubscribe_links::create("https://unsub.example/", std::move(k));
    EXPECT_TRUE(links.has_value()) << (links ? "" : links.error());
    return links ? std::move(*links) : nullptr;
}

TEST(Unsubscribe, ATokenVerifiesAndNamesItsLowerCasedPair) {
    auto links = make();
    const std::string t = links->token("Shop.Example", "Gone+1@X.test");
    for (const char c : t)
        EXPECT_TRUE(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.') << t;
    auto target = links->verify(t);
    ASSERT_TRUE(target.has_value());
    EXPECT_EQ(target->tenant, "shop.example");
    EXPECT_EQ(target->recipient, "gone+1@x.test");
}

TEST(Unsubscribe, AnyChangedCharacterOrAnotherKeyFails) {
    auto links = make();
    const std::string t = links->token("shop.example", "a@x.test");
    for (std::size_t i = 0; i < t.size(); ++i) {
        std::string bad = t;
        bad[i] = bad[i] == 'A' ? 'B' : 'A';
        if (bad == t) continue;
        EXPECT_FALSE(links->verify(bad).has_value()) << i;
    }
    EXPECT_FALSE(links->verify(t.substr(0, t.size() - 1)).has_value());
    EXPECT_FALSE(links->verify(t + "A").has_value());
    EXPECT_FALSE(links->verify("").has_value());
    EXPECT_FALSE(links->verify("..").has_value());
    EXPECT_FALSE(make(std::string(40, 'j'))->verify(t).has_value()) << "another key";
    // The tenant of one token with the MAC of another (the recipient moved to another tenant).
    const std::string other = links->token("other.example", "a@x.test");
    EXPECT_FALSE(links->verify(other.substr(0, other.find('.')) + t.substr(t.find('.'))).has_value());
}

TEST(Unsubscribe, TheKeyAndTheUrlAreChecked) {
    auto short_key = unsubscribe_links::create("https://u.example", std::string(31, 'k'));
    ASSERT_FALSE(short_key.has_value());
    EXPECT_NE(short_key.error().find("--unsubscribe-key"), std::string::npos) << short_key.error();
    EXPECT_NE(short_key.error().find("at least 32"), std::string::npos) << short_key.error();
    for (const char* bad : {"ftp://u.example", "u.example", "https://u.example/a b", "https://u.example/<x>",
                            "https://u.example/?q=1"})
        EXPECT_FALSE(unsubscribe_links::create(bad, key).has_value()) << bad;
    auto missing = unsubscribe_links::load("https://u.example", "");
    ASSERT_FALSE(missing.has_value());
    EXPECT_NE(missing.error().find("needs --unsubscribe-key"), std::string::npos) << missing.error();
    auto absent = unsubscribe_links::load("https://u.example", "/nonexistent/ringrelay-unsubscribe.key");
    ASSERT_FALSE(absent.has_value());
    EXPECT_NE(absent.error().find("/nonexistent/ringrelay-unsubscribe.key"), std::string::npos) << absent.error();
}

TEST(Unsubscribe, FieldsAreTheTwoOfRfc8058) {
    auto links = make();
    const std::string fields = links->header_fields("shop.example", "a@x.test");
    EXPECT_EQ(fields, "List-Unsubscribe: <https://unsub.example/u/" + links->token("shop.example", "a@x.test") +
                          ">\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n");
    EXPECT_EQ(links->header_fields("shop.example", std::string(800, 'a') + "@x.test"), "")
        << "a line past 998 octets is not made";
}

TEST(Unsubscribe, ListUnsubscribeIsFoundInTheHeaderOnly) {
    EXPECT_TRUE(has_list_unsubscribe("Subject: s\r\nlist-UNSUBSCRIBE: <mailto:u@x>\r\n\r\nbody\r\n"));
    EXPECT_FALSE(has_list_unsubscribe("Subject: s\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n\r\nb\r\n"));
    EXPECT_FALSE(has_list_unsubscribe("Subject: s\r\n\r\nList-Unsubscribe: <mailto:u@x>\r\n"));
}

}  // namespace
