// Read messages with Node's mailparser and print what a mail client shows, one JSON line
// per file. `npm install` in this folder (package.json) provides mailparser.
const fs = require("fs");
const { simpleParser } = require("mailparser");

function names(field) {
  if (!field) return [];
  const list = Array.isArray(field) ? field : [field];
  return list.flatMap((f) => f.value).map((a) => [a.name || "", a.address]);
}

(async () => {
  for (const file of process.argv.slice(2)) {
    const mail = await simpleParser(fs.readFileSync(file), { skipTextToHtml: true });
    console.log(JSON.stringify({
      file, from: names(mail.from), to: names(mail.to), cc: names(mail.cc),
      subject: mail.subject, text: mail.text === undefined ? null : mail.text,
      attachments: mail.attachments.filter((a) => !a.contentId)  // not inline images
        .map((a) => [a.filename, a.size]),
    }));
  }
})();
