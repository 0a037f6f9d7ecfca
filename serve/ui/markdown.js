// A small Markdown renderer for model output that never parses text as
// HTML: every piece of the text reaches the page through createTextNode
// or textContent, and elements come only from the fixed set below. Links
// keep http(s) and mailto targets only.
//
// Supported: fenced code blocks (an unclosed fence during streaming is
// still a code block), headings, paragraphs, bullet and numbered lists,
// block quotes, horizontal rules, and inline code, bold, italic,
// strikethrough and links.

const FENCE = /^ {0,3}(`{3,}|~{3,})\s*([\w+#.-]*)/;
const HEADING = /^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$/;
const RULE = /^ {0,3}([-*_])(\s*\1){2,}\s*$/;
const BULLET = /^(\s*)[-*+]\s+(.*)$/;
const NUMBERED = /^(\s*)(\d{1,9})[.)]\s+(.*)$/;
const QUOTE = /^ {0,3}>\s?(.*)$/;

// renderMarkdown returns a DocumentFragment for text.
export function renderMarkdown(text, doc = document) {
  const frag = doc.createDocumentFragment();
  renderBlocks(String(text).replace(/\r\n?/g, "\n").split("\n"), frag, doc);
  return frag;
}

function renderBlocks(lines, parent, doc) {
  let i = 0;
  let para = [];
  const flush = () => {
    if (para.length) {
      const p = doc.createElement("p");
      para.forEach((l, k) => {
        if (k) p.appendChild(doc.createElement("br"));
        renderInline(l, p, doc);
      });
      parent.appendChild(p);
      para = [];
    }
  };
  while (i < lines.length) {
    const line = lines[i];
    let m;
    if ((m = FENCE.exec(line))) {
      flush();
      const fence = m[1];
      const body = [];
      i++;
      while (i < lines.length && !lines[i].trimStart().startsWith(fence)) body.push(lines[i++]);
      i++; // the closing fence (or past the end while streaming)
      parent.appendChild(codeBlock(body.join("\n"), m[2], doc));
      continue;
    }
    if (line.trim() === "") {
      flush();
      i++;
      continue;
    }
    if ((m = HEADING.exec(line))) {
      flush();
      const h = doc.createElement("h" + Math.min(m[1].length + 2, 6)); // h3..h6: below the page's own
      renderInline(m[2], h, doc);
      parent.appendChild(h);
      i++;
      continue;
    }
    if (RULE.test(line)) {
      flush();
      parent.appendChild(doc.createElement("hr"));
      i++;
      continue;
    }
    if (QUOTE.test(line)) {
      flush();
      const inner = [];
      while (i < lines.length && (m = QUOTE.exec(lines[i]))) {
        inner.push(m[1]);
        i++;
      }
      const q = doc.createElement("blockquote");
      renderBlocks(inner, q, doc);
      parent.appendChild(q);
      continue;
    }
    if (BULLET.test(line) || NUMBERED.test(line)) {
      flush();
      i = renderList(lines, i, parent, doc);
      continue;
    }
    para.push(line.trim());
    i++;
  }
  flush();
}

// renderList renders the list starting at lines[i] (items at its indent;
// deeper lines nest) and returns the index after it.
function renderList(lines, i, parent, doc) {
  const first = BULLET.exec(lines[i]);
  const ordered = !first;
  const m0 = first || NUMBERED.exec(lines[i]);
  const indent = m0[1].length;
  const list = doc.createElement(ordered ? "ol" : "ul");
  if (ordered && m0[2] !== "1") list.start = parseInt(m0[2], 10);
  let li = null;
  let body = [];
  const close = () => {
    if (li) {
      renderItem(body, li, doc);
      list.appendChild(li);
    }
  };
  while (i < lines.length) {
    const line = lines[i];
    const m = (ordered ? NUMBERED : BULLET).exec(line);
    if (m && m[1].length === indent) {
      close();
      li = doc.createElement("li");
      body = [ordered ? m[3] : m[2]];
      i++;
      continue;
    }
    const lead = line.length - line.trimStart().length;
    if (line.trim() !== "" && lead > indent) {
      body.push(line.slice(Math.min(lead, indent + 2)));
      i++;
      continue;
    }
    if (line.trim() === "" && i + 1 < lines.length) {
      const next = lines[i + 1];
      const nlead = next.length - next.trimStart().length;
      const same = (ordered ? NUMBERED : BULLET).exec(next);
      if (nlead > indent || (same && same[1].length === indent)) {
        body.push("");
        i++;
        continue;
      }
    }
    break;
  }
  close();
  parent.appendChild(list);
  return i;
}

// renderItem renders a list item: a single line inline, more as blocks.
function renderItem(body, li, doc) {
  if (body.length === 1) renderInline(body[0], li, doc);
  else renderBlocks(body, li, doc);
}

function codeBlock(code, lang, doc) {
  const wrap = doc.createElement("div");
  wrap.className = "code";
  const bar = doc.createElement("div");
  bar.className = "code-bar";
  const name = doc.createElement("span");
  name.textContent = lang || "code";
  const copy = doc.createElement("button");
  copy.type = "button";
  copy.className = "copy";
  copy.textContent = "Copy";
  copy.addEventListener("click", () => {
    // Clipboard access needs a secure context; over plain http on
    // another host it is absent, and the button says so.
    const done = (t) => { copy.textContent = t; setTimeout(() => { copy.textContent = "Copy"; }, 1200); };
    if (navigator.clipboard) navigator.clipboard.writeText(code).then(() => done("Copied"), () => done("Blocked"));
    else done("Unavailable");
  });
  bar.append(name, copy);
  const pre = doc.createElement("pre");
  const c = doc.createElement("code");
  if (lang) c.dataset.lang = lang;
  c.textContent = code;
  pre.appendChild(c);
  wrap.append(bar, pre);
  return wrap;
}

// Inline spans, earliest match first. Code spans win over everything
// (their content is literal).
const INLINE = new RegExp([
  "(`+)([^`]|[^`][\\s\\S]*?[^`])\\1(?!`)", // 1,2: code
  "\\*\\*(?=\\S)([\\s\\S]*?\\S)\\*\\*", // 3: bold
  "(?<![\\w])__(?=\\S)([\\s\\S]*?\\S)__(?![\\w])", // 4: bold
  "\\*(?=[^\\s*])([^*]*?[^\\s*])\\*", // 5: italic
  "(?<![\\w])_(?=[^\\s_])([^_]*?[^\\s_])_(?![\\w])", // 6: italic
  "~~(?=\\S)([\\s\\S]*?\\S)~~", // 7: strike
  "\\[([^\\]\\n]+)\\]\\(\\s*([^)\\s]+)\\s*\\)", // 8,9: link
].join("|"));

function renderInline(text, parent, doc) {
  let rest = text;
  while (rest) {
    const m = INLINE.exec(rest);
    if (!m) break;
    if (m.index) parent.appendChild(doc.createTextNode(rest.slice(0, m.index)));
    let el;
    if (m[2] !== undefined) {
      el = doc.createElement("code");
      el.textContent = m[2];
    } else if (m[3] !== undefined || m[4] !== undefined) {
      el = doc.createElement("strong");
      renderInline(m[3] ?? m[4], el, doc);
    } else if (m[5] !== undefined || m[6] !== undefined) {
      el = doc.createElement("em");
      renderInline(m[5] ?? m[6], el, doc);
    } else if (m[7] !== undefined) {
      el = doc.createElement("del");
      renderInline(m[7], el, doc);
    } else {
      const href = safeURL(m[9]);
      if (href) {
        el = doc.createElement("a");
        el.href = href;
        el.target = "_blank";
        el.rel = "noopener noreferrer nofollow";
        renderInline(m[8], el, doc);
      } else {
        el = doc.createTextNode(m[0]); // an unsafe target stays plain text
      }
    }
    parent.appendChild(el);
    rest = rest.slice(m.index + m[0].length);
  }
  if (rest) parent.appendChild(doc.createTextNode(rest));
}

// safeURL returns url when it is an absolute http(s) or mailto URL, else
// "" (javascript:, data:, relative URLs and the like are refused).
export function safeURL(url) {
  let u;
  try {
    u = new URL(url);
  } catch {
    return "";
  }
  return u.protocol === "http:" || u.protocol === "https:" || u.protocol === "mailto:" ? u.href : "";
}
