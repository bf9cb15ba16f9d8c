// Unit tests of queue/campaign_header.h (issue 17): a message's campaign read from the header the
// rules name, and the message without every field of that name: folded fields, repeated fields,
// names in any case, no field at all, a field of that name in the body (left alone), values that
// cannot be a campaign (stripped all the same), lone LF line ends, a message with no body.
#include "queue/campaign_header.h"

#include <gtest/gtest.h>

#include <string>

using namespace ringrelay::queue;

namespace {

constexpr std::string_view received = "Received: from c (c [127.0.0.1]) by mx; Mon, 7 Dec 2026 21:00:00 +0000\r\n";

struct case_row {
    const char* label;
    std::string message;   // after our Received: field
    const char* name;      // the header the rules name
    std::string campaign;  // expected
    std::string stripped;  // expected message, after our Received: field
    std::size_t fields;    // how many were found
};

std::string stripped_of(const std::string& message, const char* name, campaign_fields& found) {
    found = find_campaign_fields(message, name);
    std::string out;
    append_without_fields(out, message, found.fields);
    return out;
}

class CampaignHeader : public testing::TestWithParam<case_row> {};

TEST_P(CampaignHeader, ReadsTheFirstValueAndStripsEveryField) {
    const case_row& row = GetParam();
    const std::string message = std::string(received) + row.message;
    campaign_fields found;
    const std::string out = stripped_of(message, row.name, found);
    EXPECT_EQ(found.campaign, row.campaign);
    EXPECT_EQ(found.fields.size(), row.fields);
    EXPECT_EQ(out, std::string(received) + row.stripped);
}

INSTANTIATE_TEST_SUITE_P(
    Messages, CampaignHeader,
    testing::Values(
        case_row{"Plain", "From: a@example.org\r\nX-Campaign-Id: spring-sale\r\nSubject: hi\r\n\r\nbody\r\n",
                 "X-Campaign-Id", "spring-sale", "From: a@example.org\r\nSubject: hi\r\n\r\nbody\r\n", 1},
        case_row{"NameInAnyCase", "x-CAMPAIGN-id:Spring-Sale\r\nSubject: hi\r\n\r\nbody\r\n", "X-Campaign-Id",
                 "Spring-Sale", "Subject: hi\r\n\r\nbody\r\n", 1},
        // RFC 5322 §2.2.3: unfolding removes the line ends; whitespace runs become one space.
        case_row{"Folded", "Subject: hi\r\nX-Campaign-Id:\r\n  spring\r\n\tsale  \r\nTo: b@example.net\r\n\r\nbody\r\n",
                 "X-Campaign-Id", "spring sale", "Subject: hi\r\nTo: b@example.net\r\n\r\nbody\r\n", 1},
        case_row{"RepeatedFirstWinsAllGo",
                 "X-Campaign-Id: first\r\nSubject: hi\r\nX-Campaign-Id: second\r\n\r\nbody\r\n", "X-Campaign-Id",
                 "first", "Subject: hi\r\n\r\nbody\r\n", 2},
        case_row{"None", "From: a@example.org\r\nSubject: hi\r\n\r\nX-Campaign-Id: in the body\r\n", "X-Campaign-Id",
                 "", "From: a@example.org\r\nSubject: hi\r\n\r\nX-Campaign-Id: in the body\r\n", 0},
        case_row{"BodyLeftAlone", "X-Campaign-Id: c1\r\n\r\nX-Campaign-Id: c2\r\n", "X-Campaign-Id", "c1",
                 "\r\nX-Campaign-Id: c2\r\n", 1},
        case_row{"OtherNameNotTaken", "X-Campaign-Ids: c1\r\nX-Campaign: c2\r\n\r\nbody\r\n", "X-Campaign-Id", "",
                 "X-Campaign-Ids: c1\r\nX-Campaign: c2\r\n\r\nbody\r\n", 0},
        case_row{"WhitespaceBeforeColon", "X-Campaign-Id : c1\r\n\r\nbody\r\n", "X-Campaign-Id", "c1", "\r\nbody\r\n", 1},
        case_row{"EmptyValueStripped", "X-Campaign-Id:   \r\nSubject: hi\r\n\r\nbody\r\n", "X-Campaign-Id", "",
                 "Subject: hi\r\n\r\nbody\r\n", 1},
        case_row{"ControlOctetNoCampaign", "X-Campaign-Id: a\x01z\r\n\r\nbody\r\n", "X-Campaign-Id", "", "\r\nbody\r\n", 1},
        case_row{"EightBitNoCampaign", "X-Campaign-Id: caf\xc3\xa9\r\n\r\nbody\r\n", "X-Campaign-Id", "", "\r\nbody\r\n", 1},
        case_row{"TooLongNoCampaign", "X-Campaign-Id: " + std::string(256, 'a') + "\r\n\r\nbody\r\n", "X-Campaign-Id",
                 "", "\r\nbody\r\n", 1},
        case_row{"LongestKept", "X-Campaign-Id: " + std::string(255, 'a') + "\r\n\r\nbody\r\n", "X-Campaign-Id",
                 std::string(255, 'a'), "\r\nbody\r\n", 1},
        case_row{"LoneLineFeeds", "Subject: hi\nX-Campaign-Id: lf\nTo: b\n\nbody\n", "X-Campaign-Id", "lf",
                 "Subject: hi\nTo: b\n\nbody\n", 1},
        case_row{"LastLineOfAMessageWithoutBody", "Subject: hi\r\nX-Campaign-Id: end", "X-Campaign-Id", "end",
                 "Subject: hi\r\n", 1}),
    [](const testing::TestParamInfo<case_row>& info) { return std::string(info.param.label); });

TEST(CampaignHeader, NoNameFindsNothing) {
    const std::string message = std::string(received) + "X-Campaign-Id: c\r\n\r\nbody\r\n";
    const campaign_fields found = find_campaign_fields(message, "");
    EXPECT_TRUE(found.fields.empty());
    EXPECT_TRUE(found.campaign.empty());
}

TEST(CampaignHeader, SpansNameTheFieldWithItsLineEnd) {
    const std::string message = "A: 1\r\nX-C: v\r\n w\r\nB: 2\r\n\r\n";
    const campaign_fields found = find_campaign_fields(message, "x-c");
    ASSERT_EQ(found.fields.size(), 1u);
    EXPECT_EQ(found.fields[0], (field_span{6, 12}));
    EXPECT_EQ(message.substr(found.fields[0].offset, found.fields[0].size), "X-C: v\r\n w\r\n");
}

}  // namespace
