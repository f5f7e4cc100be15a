#include "tasks/vqa/accuracy.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <map>
#include <set>
#include <sstream>
#include <unordered_map>

namespace albef::vqa {
namespace {

// vqaEval's tables, as written there (the keys with capitals can never match
// lower-cased text, and "somebody'd" -> "somebodyd" is the original's slip).
const std::unordered_map<std::string, std::string>& contractions() {
  static const std::unordered_map<std::string, std::string> table = {
      {"aint", "ain't"}, {"arent", "aren't"}, {"cant", "can't"}, {"couldve", "could've"}, {"couldnt", "couldn't"},
      {"couldn'tve", "couldn't've"}, {"couldnt've", "couldn't've"}, {"didnt", "didn't"}, {"doesnt", "doesn't"},
      {"dont", "don't"}, {"hadnt", "hadn't"}, {"hadnt've", "hadn't've"}, {"hadn'tve", "hadn't've"},
      {"hasnt", "hasn't"}, {"havent", "haven't"}, {"hed", "he'd"}, {"hed've", "he'd've"}, {"he'dve", "he'd've"},
      {"hes", "he's"}, {"howd", "how'd"}, {"howll", "how'll"}, {"hows", "how's"}, {"Id've", "I'd've"},
      {"I'dve", "I'd've"}, {"Im", "I'm"}, {"Ive", "I've"}, {"isnt", "isn't"}, {"itd", "it'd"},
      {"itd've", "it'd've"}, {"it'dve", "it'd've"}, {"itll", "it'll"}, {"let's", "let's"}, {"maam", "ma'am"},
      {"mightnt", "mightn't"}, {"mightnt've", "mightn't've"}, {"mightn'tve", "mightn't've"},
      {"mightve", "might've"}, {"mustnt", "mustn't"}, {"mustve", "must've"}, {"neednt", "needn't"},
      {"notve", "not've"}, {"oclock", "o'clock"}, {"oughtnt", "oughtn't"}, {"ow's'at", "'ow's'at"},
      {"'ows'at", "'ow's'at"}, {"'ow'sat", "'ow's'at"}, {"shant", "shan't"}, {"shed've", "she'd've"},
      {"she'dve", "she'd've"}, {"she's", "she's"}, {"shouldve", "should've"}, {"shouldnt", "shouldn't"},
      {"shouldnt've", "shouldn't've"}, {"shouldn'tve", "shouldn't've"}, {"somebody'd", "somebodyd"},
      {"somebodyd've", "somebody'd've"}, {"somebody'dve", "somebody'd've"}, {"somebodyll", "somebody'll"},
      {"somebodys", "somebody's"}, {"someoned", "someone'd"}, {"someoned've", "someone'd've"},
      {"someone'dve", "someone'd've"}, {"someonell", "someone'll"}, {"someones", "someone's"},
      {"somethingd", "something'd"}, {"somethingd've", "something'd've"}, {"something'dve", "something'd've"},
      {"somethingll", "something'll"}, {"thats", "that's"}, {"thered", "there'd"}, {"thered've", "there'd've"},
      {"there'dve", "there'd've"}, {"therere", "there're"}, {"theres", "there's"}, {"theyd", "they'd"},
      {"theyd've", "they'd've"}, {"they'dve", "they'd've"}, {"theyll", "they'll"}, {"theyre", "they're"},
      {"theyve", "they've"}, {"twas", "'twas"}, {"wasnt", "wasn't"}, {"wed've", "we'd've"},
      {"we'dve", "we'd've"}, {"weve", "we've"}, {"werent", "weren't"}, {"whatll", "what'll"},
      {"whatre", "what're"}, {"whats", "what's"}, {"whatve", "what've"}, {"whens", "when's"},
      {"whered", "where'd"}, {"wheres", "where's"}, {"whereve", "where've"}, {"whod", "who'd"},
      {"whod've", "who'd've"}, {"who'dve", "who'd've"}, {"wholl", "who'll"}, {"whos", "who's"},
      {"whove", "who've"}, {"whyll", "why'll"}, {"whyre", "why're"}, {"whys", "why's"}, {"wont", "won't"},
      {"wouldve", "would've"}, {"wouldnt", "wouldn't"}, {"wouldnt've", "wouldn't've"},
      {"wouldn'tve", "wouldn't've"}, {"yall", "y'all"}, {"yall'll", "y'all'll"}, {"y'allll", "y'all'll"},
      {"yall'd've", "y'all'd've"}, {"y'alld've", "y'all'd've"}, {"y'all'dve", "y'all'd've"}, {"youd", "you'd"},
      {"youd've", "you'd've"}, {"you'dve", "you'd've"}, {"youll", "you'll"}, {"youre", "you're"},
      {"youve", "you've"}};
  return table;
}

const std::unordered_map<std::string, std::string>& number_words() {
  static const std::unordered_map<std::string, std::string> table = {
      {"none", "0"}, {"zero", "0"}, {"one", "1"}, {"two", "2"}, {"three", "3"}, {"four", "4"},
      {"five", "5"}, {"six", "6"}, {"seven", "7"}, {"eight", "8"}, {"nine", "9"}, {"ten", "10"}};
  return table;
}

constexpr const char kPunctuation[] = {';', '/', '[', ']', '"', '{', '}', '(', ')', '=', '+',
                                       '\\', '_', '-', '>', '<', '@', '`', ',', '?', '!'};

bool is_digit(char c) { return c >= '0' && c <= '9'; }

// commaStrip.search: a digit, a comma, a digit.
bool has_digit_comma_digit(const std::string& text) {
  for (size_t i = 1; i + 1 < text.size(); ++i)
    if (text[i] == ',' && is_digit(text[i - 1]) && is_digit(text[i + 1])) return true;
  return false;
}

std::string replace_char(const std::string& text, char from, const std::string& to) {
  std::string out;
  for (const char c : text) {
    if (c == from)
      out += to;
    else
      out.push_back(c);
  }
  return out;
}

std::string strip(const std::string& text) {
  const char* space = " \t\n\r\f\v";
  const size_t begin = text.find_first_not_of(space);
  if (begin == std::string::npos) return "";
  return text.substr(begin, text.find_last_not_of(space) - begin + 1);
}

}  // namespace

std::string process_punctuation(const std::string& text) {
  std::string out = text;
  const bool digit_comma_digit = has_digit_comma_digit(text);
  for (const char mark : kPunctuation) {
    // The tests read the original text, the replacements the running one.
    const std::string with_space_after = std::string(1, mark) + " ", with_space_before = " " + std::string(1, mark);
    const bool touches_space = text.find(with_space_after) != std::string::npos ||
                               text.find(with_space_before) != std::string::npos;
    out = replace_char(out, mark, touches_space || digit_comma_digit ? "" : " ");
  }
  // periodStrip.sub('', out, re.UNICODE): re.UNICODE (32) lands in sub's count argument.
  std::string stripped;
  int removed = 0;
  for (size_t i = 0; i < out.size(); ++i) {
    const bool digit_follows = i + 1 < out.size() && is_digit(out[i + 1]);
    if (out[i] == '.' && !digit_follows && removed < 32) {
      ++removed;
      continue;
    }
    stripped.push_back(out[i]);
  }
  return stripped;
}

std::string process_digit_article(const std::string& text) {
  std::string lowered = text;
  std::transform(lowered.begin(), lowered.end(), lowered.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  std::istringstream words(lowered);
  std::vector<std::string> kept;
  for (std::string word; words >> word;) {
    if (const auto number = number_words().find(word); number != number_words().end()) word = number->second;
    if (word == "a" || word == "an" || word == "the") continue;
    kept.push_back(word);
  }
  std::string out;
  for (std::string& word : kept) {
    if (const auto full = contractions().find(word); full != contractions().end()) word = full->second;
    out += (out.empty() ? "" : " ") + word;
  }
  return out;
}

double question_accuracy(const std::string& answer, std::vector<std::string> human_answers) {
  if (human_answers.empty()) return 0.0;
  const std::string response = process_digit_article(process_punctuation(strip(
      replace_char(replace_char(answer, '\n', " "), '\t', " "))));
  if (std::set<std::string>(human_answers.begin(), human_answers.end()).size() > 1)
    for (std::string& human : human_answers) human = process_punctuation(human);
  const auto matches = static_cast<double>(std::count(human_answers.begin(), human_answers.end(), response));
  // Leaving out a matching answer leaves matches - 1 among the others, any other leaves matches.
  double total = 0.0;
  for (const std::string& human : human_answers)
    total += std::min(1.0, (human == response ? matches - 1.0 : matches) / 3.0);
  return total / static_cast<double>(human_answers.size());
}

nlohmann::json accuracy_report(const std::vector<ScoredAnswer>& answers) {
  auto percent = [](double sum, size_t count) {
    return count == 0 ? 0.0 : std::round(100.0 * 100.0 * sum / static_cast<double>(count)) / 100.0;
  };
  double total = 0.0;
  std::map<std::string, std::pair<double, size_t>> per_type;
  for (const ScoredAnswer& scored : answers) {
    const double accuracy = question_accuracy(scored.answer, scored.human_answers);
    total += accuracy;
    if (!scored.answer_type.empty()) {
      per_type[scored.answer_type].first += accuracy;
      ++per_type[scored.answer_type].second;
    }
  }
  nlohmann::json report = {{"overall", percent(total, answers.size())}, {"questions", answers.size()}};
  nlohmann::json types = nlohmann::json::object();
  for (const auto& [type, sum_count] : per_type) types[type] = percent(sum_count.first, sum_count.second);
  report["perAnswerType"] = types;
  return report;
}

}  // namespace albef::vqa
