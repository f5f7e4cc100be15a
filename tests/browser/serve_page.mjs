// Loads albef serve's page in Debian's chromium (headless), searches the
// gallery, uploads an image with a caption and a question, and checks that
// thumbnails, the score, the heat map and the answers appear. Saves a
// screenshot. usage: node serve_page.mjs URL IMAGE SCREENSHOT
import puppeteer from "puppeteer-core";

const [url, image, screenshot] = process.argv.slice(2);
const browser = await puppeteer.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
});
try {
  const page = await browser.newPage();
  await page.setViewport({width: 1200, height: 1100});
  const failures = [];
  page.on("pageerror", (e) => failures.push("page error: " + e.message));
  await page.goto(url, {waitUntil: "networkidle0"});
  await page.waitForFunction(() => !document.getElementById("model").textContent.startsWith("loading"));

  await page.type("#query", "a family sitting at a table");
  await page.click("#search-button");
  // The status line says how many images were found once all their thumbnails are in.
  await page.waitForFunction(() => {
    const found = parseInt(document.getElementById("search-status").textContent, 10);
    const images = document.querySelectorAll("#results img");
    return found > 0 && images.length === found && [...images].every((img) => img.complete && img.naturalWidth > 0);
  }, {timeout: 30000});
  const thumbnails = await page.$$eval("#results img", (images) => images.length);

  const upload = await page.$("#upload");
  await upload.uploadFile(image);
  await page.waitForFunction(() => !document.getElementById("preview").hidden);
  await page.type("#caption", "a cake on a table");
  await page.click("#score-button");
  await page.waitForFunction(() => {
    const heatmap = document.getElementById("heatmap");
    return !heatmap.hidden && heatmap.complete && heatmap.naturalWidth > 0;
  }, {timeout: 30000});
  const score = await page.$eval("#score", (e) => e.textContent);

  await page.type("#question", "what is on the table?");
  await page.click("#ask-button");
  await page.waitForFunction(() => document.querySelectorAll("#answers li").length > 0, {timeout: 30000});
  const answers = await page.$$eval("#answers li", (items) => items.map((i) => i.textContent));

  await page.screenshot({path: screenshot, fullPage: true});
  if (!/ITC similarity -?\d/.test(score)) failures.push("no score shown: " + score);
  console.log(JSON.stringify({thumbnails, score, answers, failures}));
  process.exitCode = failures.length ? 1 : 0;
} finally {
  await browser.close();
}
