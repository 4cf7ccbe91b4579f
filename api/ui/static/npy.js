// Reading the run files the map needs: `.npy` arrays (NumPy's documented format: magic, version,
// a little header dict, raw data) and CSV (RFC 4180 quoting, as Python's csv module writes).

const DTYPES = {
  "<f4": [Float32Array, 4], "<f8": [Float64Array, 8], "<i4": [Int32Array, 4],
  "<i8": [BigInt64Array, 8], "|u1": [Uint8Array, 1], "<u4": [Uint32Array, 4],
};

/** `{shape, data}` of a little-endian C-ordered `.npy` (data as Float32Array or the dtype's). */
export function parseNpy(buffer) {
  const bytes = new Uint8Array(buffer);
  const magic = String.fromCharCode(...bytes.slice(1, 6));
  if (bytes[0] !== 0x93 || magic !== "NUMPY") throw new Error("not a .npy file");
  const major = bytes[6];
  const view = new DataView(buffer);
  const headerLen = major === 1 ? view.getUint16(8, true) : view.getUint32(8, true);
  const start = major === 1 ? 10 : 12;
  const header = new TextDecoder("latin1").decode(bytes.slice(start, start + headerLen));
  const descr = /'descr':\s*'([^']+)'/.exec(header)?.[1];
  const fortran = /'fortran_order':\s*(True|False)/.exec(header)?.[1] === "True";
  const shapeText = /'shape':\s*\(([^)]*)\)/.exec(header)?.[1] ?? "";
  const shape = shapeText.split(",").map((s) => s.trim()).filter(Boolean).map(Number);
  if (!DTYPES[descr]) throw new Error(`unsupported dtype ${descr}`);
  if (fortran) throw new Error("Fortran-ordered arrays are not supported");
  const [Type, size] = DTYPES[descr];
  const count = shape.reduce((a, b) => a * b, 1);
  const offset = start + headerLen;
  // Copy: the data offset need not be aligned to the element size.
  const data = new Type(buffer.slice(offset, offset + count * size));
  return { shape, data: data instanceof Float32Array ? data : Float32Array.from(data, Number) };
}

/** Rows of a CSV text (an array of arrays of strings); quotes and newlines inside quotes. */
export function parseCsv(text) {
  const rows = [];
  let row = [];
  let field = "";
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (quoted) {
      if (c === '"') {
        if (text[i + 1] === '"') { field += '"'; i++; } else quoted = false;
      } else field += c;
    } else if (c === '"') quoted = true;
    else if (c === ",") { row.push(field); field = ""; }
    else if (c === "\n" || c === "\r") {
      if (c === "\r" && text[i + 1] === "\n") i++;
      row.push(field); rows.push(row); row = []; field = "";
    } else field += c;
  }
  if (field !== "" || row.length) { row.push(field); rows.push(row); }
  return rows;
}
