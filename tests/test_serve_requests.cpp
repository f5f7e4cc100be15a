// The service's request reader without a server or a model: both body forms,
// every limit, and the status each refusal carries.
#include "albef/core/fs.h"
#include "albef/core/web.h"
#include "server/requests.h"
#include "test_util.h"

#include <gtest/gtest.h>
#include <httplib.h>
#include <nlohmann/json.hpp>

namespace {

using albef::server::HttpError;
using albef::server::RequestLimits;
using albef::server::RequestReader;
using nlohmann::json;

const RequestLimits kLimits{/*max_pixels=*/200'000, /*max_text_chars=*/20, /*max_items=*/3, /*image_res=*/32};

httplib::Request json_request(const json& body) {
  httplib::Request request;
  request.body = body.dump();
  return request;
}

httplib::Request form_request(std::initializer_list<std::tuple<std::string, std::string, std::string>> parts) {
  httplib::Request request;
  request.set_header("Content-Type", "multipart/form-data; boundary=x");
  for (const auto& [name, filename, content] : parts)
    request.files.emplace(name, httplib::MultipartFormData{name, content, filename, ""});
  return request;
}

std::string image_bytes() { return albef::read_file(std::string(ALBEF_TEST_DATA_DIR) + "/images/horse.png"); }

std::string image_base64() {
  const std::string bytes = image_bytes();
  return albef::base64(std::vector<unsigned char>(bytes.begin(), bytes.end()));
}

// The status and a piece of the message of the HttpError `read` throws.
template <typename Read>
void expect_refusal(Read&& read, int status, const std::string& message) {
  try {
    read();
    ADD_FAILURE() << "accepted; expected " << status << " with '" << message << "'";
  } catch (const HttpError& e) {
    EXPECT_EQ(e.status, status) << e.what();
    EXPECT_NE(std::string(e.what()).find(message), std::string::npos) << e.what();
  }
}

TEST(ServeRequests, ReadsJsonAndMultipartAlike) {
  const RequestReader reader(kLimits);
  EXPECT_EQ(reader.texts(json_request({{"texts", {"a dog", "a cat"}}})), (std::vector<std::string>{"a dog", "a cat"}));
  EXPECT_EQ(reader.texts(form_request({{"texts", "", "a dog"}, {"texts", "", "a cat"}})),
            (std::vector<std::string>{"a dog", "a cat"}));

  const albef::server::SearchRequest query = reader.search(form_request({{"query", "", "a dog"}, {"k", "", "7"}}));
  EXPECT_EQ(query.query, "a dog");
  EXPECT_EQ(query.k, 7);
  EXPECT_EQ(query.rerank, 0);

  const std::vector<at::Tensor> images = reader.images(form_request({{"image", "horse.png", image_bytes()}}));
  ASSERT_EQ(images.size(), 1u);
  EXPECT_EQ(images[0].sizes(), (std::vector<int64_t>{3, 32, 32}));
  const albef::server::VqaRequest question =
      reader.vqa(json_request({{"image", image_base64()}, {"question", "what is it?"}, {"top", 2}}));
  EXPECT_TRUE(question.image.equal(images[0]));
  EXPECT_EQ(question.top, 2);
  const auto pairs = reader.pairs(json_request({{"image", image_base64()}, {"text", "a horse"}}));
  ASSERT_EQ(pairs.size(), 1u);
  EXPECT_EQ(pairs[0].second, "a horse");
  EXPECT_EQ(reader.gradcam(json_request({{"image", image_base64()}, {"text", "a horse"}})).image.rgb.channels(), 3);
}

TEST(ServeRequests, RefusesWithTheStatusAndTheField) {
  const RequestReader reader(kLimits);
  httplib::Request not_json;
  not_json.body = "{\"texts\": [";
  expect_refusal([&] { reader.texts(not_json); }, 400, "not valid JSON");
  expect_refusal([&] { reader.texts(json_request(json::array({1, 2}))); }, 400, "must be a JSON object");
  expect_refusal([&] { reader.texts(json_request({{"text", "a"}})); }, 422, "'texts' must be a list of strings");
  expect_refusal([&] { reader.texts(json_request({{"texts", json::array()}})); }, 422, "'texts' is empty");
  expect_refusal([&] { reader.texts(json_request({{"texts", {"a", "b", "c", "d"}}})); }, 413, "over --max_items 3");
  expect_refusal([&] { reader.texts(json_request({{"texts", {"a", 5}}})); }, 422, "texts[1] must be a string");
  expect_refusal([&] { reader.texts(json_request({{"texts", {std::string(21, 'a')}}})); }, 413,
                 "texts[0] has 21 bytes, over --max_text_chars 20");
  expect_refusal([&] { reader.search(json_request({{"k", 3}})); }, 422, "missing 'query'");
  expect_refusal([&] { reader.search(json_request({{"query", "a"}, {"k", 0}})); }, 422,
                 "'k' must be in [1, 1000], got 0");
  expect_refusal([&] { reader.search(json_request({{"query", "a"}, {"k", 18446744073709551615ull}})); }, 422,
                 "got 18446744073709551615");
  expect_refusal([&] { reader.search(json_request({{"query", "a"}, {"rerank", 4}})); }, 422,
                 "'rerank' must be in [0, 3]");
  expect_refusal([&] { reader.search(form_request({{"query", "", "a"}, {"k", "", "ten"}})); }, 422,
                 "'k' must be an integer");
  expect_refusal([&] { reader.vqa(json_request({{"question", "why?"}})); }, 422, "missing 'image'");
  expect_refusal([&] { reader.vqa(json_request({{"image", 7}, {"question", "why?"}})); }, 422,
                 "'image' must be a base64 string");
  expect_refusal([&] { reader.vqa(json_request({{"image", "***"}, {"question", "why?"}})); }, 422,
                 "'image' is not base64");
  expect_refusal([&] { reader.images(json_request({{"images", {albef::base64({'n', 'o', 'p', 'e'})}}})); }, 422,
                 "images[0]");
  expect_refusal([&] { reader.pairs(json_request({{"pairs", {{{"text", "a"}}}}})); }, 422,
                 "pairs[0] needs 'image' and 'text'");
}

TEST(ServeRequests, RefusesAnImageOverMaxPixelsByItsHeader) {
  RequestLimits small = kLimits;
  small.max_pixels = 100;  // horse.png is larger: refused before it is decoded
  const RequestReader reader(small);
  expect_refusal([&] { reader.images(json_request({{"images", {image_base64()}}})); }, 413,
                 "pixels, over --max_pixels 100");
}

TEST(ServeRequests, RefusesAHeaderWhosePixelCountOverflows) {
  // Found by the request fuzzer: a PNG header claiming 4026531840 x 4026531840 pixels, a count past int64.
  std::string png("\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR\xf0\0\0\0\xf0\0\0\0\x08\x02\0\0\0\0\0\0\0", 33);
  const RequestReader reader(kLimits);
  expect_refusal(
      [&] {
        reader.images(json_request({{"images", {albef::base64(std::vector<unsigned char>(png.begin(), png.end()))}}}));
      },
      413, "4026531840x4026531840 pixels, over --max_pixels");
}

}  // namespace
