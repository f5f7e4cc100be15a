#include "server/requests.h"

#include "albef/core/error.h"
#include "albef/core/web.h"
#include "albef/vision/image.h"

#include <httplib.h>
#include <nlohmann/json.hpp>

#include <optional>

namespace albef::server {
namespace {

using nlohmann::json;

json parse_body(const httplib::Request& request) {
  json body;
  try {
    body = json::parse(request.body);
  } catch (const json::exception& e) {
    throw HttpError(400, std::string("the body is not valid JSON: ") + e.what());
  }
  if (!body.is_object()) throw HttpError(400, "the body must be a JSON object");
  return body;
}

// The request's fields: the JSON body, or a multipart form's parts (files
// become base64 strings, text parts strings, k/rerank/top integers; repeated
// images/texts become lists).
json fields(const httplib::Request& request) {
  if (!request.is_multipart_form_data()) return parse_body(request);
  json body = json::object();
  for (const auto& [name, part] : request.files) {
    json value = part.filename.empty() ? json(part.content)
                                       : json(base64(std::vector<unsigned char>(part.content.begin(), part.content.end())));
    if (name == "top" || name == "k" || name == "rerank") {
      try {
        value = std::stoll(part.content);
      } catch (const std::exception&) {
        throw HttpError(422, "'" + name + "' must be an integer");
      }
    }
    if (name == "images" || name == "texts")
      body[name].push_back(value);
    else
      body[name] = value;
  }
  return body;
}

class Checks {
 public:
  explicit Checks(const RequestLimits& limits) : limits_(limits) {}

  void text(const std::string& text, const std::string& what) const {
    if (static_cast<int64_t>(text.size()) > limits_.max_text_chars)
      throw HttpError(413, what + " has " + std::to_string(text.size()) + " bytes, over --max_text_chars " +
                               std::to_string(limits_.max_text_chars));
  }

  std::string text_field(const json& body, const char* key) const {
    if (!body.contains(key)) throw HttpError(422, std::string("missing '") + key + "'");
    if (!body[key].is_string()) throw HttpError(422, std::string("'") + key + "' must be a string");
    std::string value = body[key].get<std::string>();
    text(value, std::string("'") + key + "'");
    return value;
  }

  int64_t int_field(const json& body, const char* key, int64_t fallback, int64_t low, int64_t high) const {
    if (!body.contains(key)) return fallback;
    if (!body[key].is_number_integer()) throw HttpError(422, std::string("'") + key + "' must be an integer");
    // A number past int64's range is unsigned in JSON: out of range either way.
    const bool too_big = body[key].is_number_unsigned() && body[key].get<uint64_t>() > static_cast<uint64_t>(high);
    const int64_t value = too_big ? high + 1 : body[key].get<int64_t>();
    if (value < low || value > high)
      throw HttpError(422, std::string("'") + key + "' must be in [" + std::to_string(low) + ", " +
                               std::to_string(high) + "], got " + body[key].dump());
    return value;
  }

  // A list of at most max_items entries under `key`.
  const json& list(const json& body, const char* key, const std::string& what_it_holds) const {
    if (!body.contains(key) || !body[key].is_array())
      throw HttpError(422, std::string("'") + key + "' must be a list of " + what_it_holds);
    const size_t count = body[key].size();
    if (count == 0) throw HttpError(422, std::string("'") + key + "' is empty");
    if (static_cast<int64_t>(count) > limits_.max_items)
      throw HttpError(413, std::string("'") + key + "' has " + std::to_string(count) + " items, over --max_items " +
                               std::to_string(limits_.max_items));
    return body[key];
  }

  // An image given as base64 (a JSON string, or a multipart file part).
  Upload image(const json& value, const std::string& what) const {
    if (!value.is_string()) throw HttpError(422, what + " must be a base64 string");
    const std::optional<std::string> bytes = base64_decode(value.get<std::string>());
    if (!bytes) throw HttpError(422, what + " is not base64");
    // The header's size first: a small file may claim a huge image (up to
    // 2^32 a side, whose product overflows int64: compared as doubles).
    if (const auto size = vision::image_dimensions(*bytes);
        size && static_cast<double>(size->first) * static_cast<double>(size->second) >
                    static_cast<double>(limits_.max_pixels))
      throw HttpError(413, what + " is " + std::to_string(size->first) + "x" + std::to_string(size->second) +
                               " pixels, over --max_pixels " + std::to_string(limits_.max_pixels));
    Upload upload;
    try {
      upload.rgb = vision::decode_rgb(*bytes, what);
    } catch (const Error& e) {
      throw HttpError(422, e.what());
    }
    if (static_cast<int64_t>(upload.rgb.rows) * upload.rgb.cols > limits_.max_pixels)
      throw HttpError(413, what + " is over --max_pixels " + std::to_string(limits_.max_pixels));
    const int res = static_cast<int>(limits_.image_res);
    upload.tensor = vision::to_pixel_tensor(vision::resize_bicubic_pil(upload.rgb, res, res));
    return upload;
  }

 private:
  const RequestLimits& limits_;
};

}  // namespace

std::vector<std::string> RequestReader::texts(const httplib::Request& request) const {
  const Checks check(limits_);
  const json body = fields(request);
  const json& list = check.list(body, "texts", "strings");
  std::vector<std::string> out;
  for (size_t i = 0; i < list.size(); ++i) {
    const std::string where = "texts[" + std::to_string(i) + "]";
    if (!list[i].is_string()) throw HttpError(422, where + " must be a string");
    out.push_back(list[i].get<std::string>());
    check.text(out.back(), where);
  }
  return out;
}

std::vector<at::Tensor> RequestReader::images(const httplib::Request& request) const {
  const Checks check(limits_);
  json body = fields(request);
  if (body.contains("image") && !body.contains("images")) body["images"] = json::array({body["image"]});
  const json& list = check.list(body, "images", "base64 images");
  std::vector<at::Tensor> out;
  for (size_t i = 0; i < list.size(); ++i)
    out.push_back(check.image(list[i], "images[" + std::to_string(i) + "]").tensor);
  return out;
}

std::vector<std::pair<at::Tensor, std::string>> RequestReader::pairs(const httplib::Request& request) const {
  const Checks check(limits_);
  json body = fields(request);
  if (body.contains("image") && body.contains("text") && !body.contains("pairs"))
    body["pairs"] = json::array({{{"image", body["image"]}, {"text", body["text"]}}});
  const json& list = check.list(body, "pairs", "{\"image\": base64, \"text\": string}");
  std::vector<std::pair<at::Tensor, std::string>> out;
  for (size_t i = 0; i < list.size(); ++i) {
    const json& pair = list[i];
    const std::string where = "pairs[" + std::to_string(i) + "]";
    if (!pair.is_object() || !pair.contains("image")) throw HttpError(422, where + " needs 'image' and 'text'");
    out.emplace_back(check.image(pair["image"], where + ".image").tensor, check.text_field(pair, "text"));
  }
  return out;
}

SearchRequest RequestReader::search(const httplib::Request& request) const {
  const Checks check(limits_);
  const json body = fields(request);
  return {check.text_field(body, "query"), check.int_field(body, "k", 10, 1, 1000),
          check.int_field(body, "rerank", 0, 0, limits_.max_items)};
}

VqaRequest RequestReader::vqa(const httplib::Request& request) const {
  const Checks check(limits_);
  const json body = fields(request);
  if (!body.contains("image")) throw HttpError(422, "missing 'image'");
  return {check.image(body["image"], "'image'").tensor, check.text_field(body, "question"),
          check.int_field(body, "top", 5, 1, 100)};
}

GradcamRequest RequestReader::gradcam(const httplib::Request& request) const {
  const Checks check(limits_);
  const json body = fields(request);
  if (!body.contains("image")) throw HttpError(422, "missing 'image'");
  return {check.image(body["image"], "'image'"), check.text_field(body, "text")};
}

}  // namespace albef::server
