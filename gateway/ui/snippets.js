// "Copy as": the playground's request as a curl command, a Python (openai SDK) or a
// JavaScript (fetch) program. The token is always the $PORTICO_TOKEN environment
// variable, never the one typed in the page, so a snippet can be pasted anywhere.

// Each takes { baseUrl, body }: the base URL (…/v1) and the JSON body the playground sends.

function shellQuote(text) {
  return `'${text.replace(/'/g, "'\\''")}'`;
}

/** The body as JSON, a key a line and a message a line: short, and still valid JSON. */
function bodyJson(body) {
  const lines = Object.entries(body).map(([key, value]) => {
    const text = key === 'messages'
      ? `[\n${value.map((m) => `    ${JSON.stringify(m)}`).join(',\n')}\n  ]`
      : JSON.stringify(value);
    return `  ${JSON.stringify(key)}: ${text}`;
  });
  return `{\n${lines.join(',\n')}\n}`;
}

function curl({ baseUrl, body }) {
  const json = bodyJson(body);
  return [
    `curl ${body.stream ? '-N ' : ''}${shellQuote(`${baseUrl}/chat/completions`)} \\`,
    '  -H "Authorization: Bearer $PORTICO_TOKEN" \\',
    '  -H "Content-Type: application/json" \\',
    `  -d ${shellQuote(json)}`,
  ].join('\n');
}

/** A JSON value as a Python literal (JSON string escapes are valid Python ones). */
function py(value) {
  if (value === null || value === undefined) return 'None';
  if (value === true) return 'True';
  if (value === false) return 'False';
  if (Array.isArray(value)) return `[${value.map(py).join(', ')}]`;
  if (typeof value === 'object') {
    return `{${Object.entries(value).map(([k, v]) => `${JSON.stringify(k)}: ${py(v)}`).join(', ')}}`;
  }
  return JSON.stringify(value);
}

// Sampling parameters vLLM (and SGLang) accept but OpenAI's API and SDK do not know.
const EXTENSIONS = ['top_k', 'repetition_penalty'];

function python({ baseUrl, body }) {
  const args = [];
  const extra = {};
  for (const [key, value] of Object.entries(body)) {
    if (EXTENSIONS.includes(key)) extra[key] = value;
    else if (key === 'messages') {
      args.push(`    messages=[\n${value.map((m) => `        ${py(m)},`).join('\n')}\n    ],`);
    } else args.push(`    ${key}=${py(value)},`);
  }
  if (Object.keys(extra).length) {
    args.push('    # vLLM sampling parameters the OpenAI SDK does not know');
    args.push(`    extra_body=${py(extra)},`);
  }
  const lines = [
    'import os',
    '',
    'from openai import OpenAI',
    '',
    'client = OpenAI(',
    `    base_url=${py(baseUrl)},`,
    '    api_key=os.environ["PORTICO_TOKEN"],',
    ')',
    '',
    `${body.stream ? 'stream' : 'completion'} = client.chat.completions.create(`,
    ...args,
    ')',
  ];
  if (body.stream) {
    lines.push(
      'for chunk in stream:',
      '    if chunk.choices and chunk.choices[0].delta.content:',
      '        print(chunk.choices[0].delta.content, end="", flush=True)',
      '    if chunk.usage:',
      '        print("\\n", chunk.usage)',
    );
  } else {
    lines.push('print(completion.choices[0].message.content)', 'print(completion.usage)');
  }
  return lines.join('\n');
}

function javascript({ baseUrl, body }) {
  const json = bodyJson(body).replace(/\n/g, '\n  ');
  const lines = [
    '// Node 18+ (or a browser page allowed by the endpoint\'s cors_origins)',
    `const response = await fetch(${JSON.stringify(`${baseUrl}/chat/completions`)}, {`,
    '  method: "POST",',
    '  headers: {',
    '    "Authorization": `Bearer ${process.env.PORTICO_TOKEN}`,',
    '    "Content-Type": "application/json",',
    '  },',
    `  body: JSON.stringify(${json}),`,
    '});',
    'if (!response.ok) throw new Error(`HTTP ${response.status}: ${await response.text()}`);',
  ];
  if (body.stream) {
    lines.push(
      '',
      'const decoder = new TextDecoder();',
      'let buffer = "";',
      'for await (const bytes of response.body) {',
      '  buffer += decoder.decode(bytes, { stream: true });',
      '  const lines = buffer.split("\\n");',
      '  buffer = lines.pop();',
      '  for (const line of lines) {',
      '    if (!line.startsWith("data: ") || line === "data: [DONE]") continue;',
      '    const chunk = JSON.parse(line.slice(6));',
      '    const text = chunk.choices[0]?.delta?.content;',
      '    if (text) process.stdout.write(text);',
      '    if (chunk.usage) console.log("\\n", chunk.usage);',
      '  }',
      '}',
    );
  } else {
    lines.push(
      '',
      'const completion = await response.json();',
      'console.log(completion.choices[0].message.content);',
      'console.log(completion.usage);',
    );
  }
  return lines.join('\n');
}

export const FORMATS = [
  { id: 'curl', label: 'curl', render: curl },
  { id: 'python', label: 'Python', render: python },
  { id: 'javascript', label: 'JavaScript', render: javascript },
];
