/// Every counter of a running system at one moment, in sections (the engine, the software,
/// each port, ...), and its three renderings: a table for people, JSON for programs, and
/// Prometheus text for node_exporter's textfile collector.
public struct MetricsSnapshot: Sendable {
    public struct Section: Sendable {
        public var title: String
        public var rows: [(name: String, value: UInt64)]
        /// Rows that are levels (entries, buffers held) rather than running counts.
        public var gauges: Set<String>

        public init(_ title: String, _ rows: [(String, UInt64)], gauges: Set<String> = []) {
            self.title = title
            self.rows = rows.map { (name: $0.0, value: $0.1) }
            self.gauges = gauges
        }
    }

    public var sections: [Section]

    public init(_ sections: [Section]) { self.sections = sections }

    /// Each section's title, then its counters in aligned columns.
    public var table: String {
        sections.map { section in
            let width = section.rows.map(\.name.count).max() ?? 0
            return section.title + "\n" + section.rows.map { row in
                "  " + row.name + String(repeating: " ", count: width - row.name.count + 2) + String(row.value)
            }.joined(separator: "\n")
        }.joined(separator: "\n\n")
    }

    /// One object per section, the counters' names as keys.
    public var json: String {
        "{" + sections.map { section in
            Self.quote(section.title) + ": {"
                + section.rows.map { "\(Self.quote($0.name)): \($0.value)" }.joined(separator: ", ") + "}"
        }.joined(separator: ",\n ") + "}"
    }

    /// The Prometheus text format (0.0.4): one family per counter, named
    /// `offload_<section>_<counter>` in lower case with `_` for every other character, and
    /// `_total` after a counter's name (in this format the suffix is part of the family's
    /// name). A name that comes twice keeps its first value.
    public var prometheus: String {
        var out = "", seen = Set<String>()
        for section in sections {
            for row in section.rows {
                let gauge = section.gauges.contains(row.name)
                // A row that repeats its section's title ("tcp offload: segments sent") says it once.
                let repeated = section.title + ": "
                let rowName = row.name.hasPrefix(repeated) ? String(row.name.dropFirst(repeated.count)) : row.name
                let name = "offload_" + Self.metricName(section.title + " " + rowName) + (gauge ? "" : "_total")
                guard seen.insert(name).inserted else { continue }
                out += "# HELP \(name) \(Self.helpText(section.title + ": " + row.name))\n"
                out += "# TYPE \(name) \(gauge ? "gauge" : "counter")\n"
                out += "\(name) \(row.value)\n"
            }
        }
        return out
    }

    /// Lower case letters and digits; every run of anything else becomes one `_`.
    static func metricName(_ text: String) -> String {
        var out = "", pendingSeparator = false
        for c in text.lowercased().unicodeScalars {
            if ("a"..."z").contains(c) || ("0"..."9").contains(c) {
                if pendingSeparator && !out.isEmpty { out += "_" }
                pendingSeparator = false
                out.unicodeScalars.append(c)
            } else {
                pendingSeparator = true
            }
        }
        return out.hasSuffix("_total") ? String(out.dropLast(6)) : out
    }

    /// HELP text escapes backslashes and line feeds.
    static func helpText(_ text: String) -> String {
        var out = ""
        for c in text {
            switch c {
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            default: out.append(c)
            }
        }
        return out
    }

    static func quote(_ s: String) -> String {
        var out = "\""
        for c in s {
            if c == "\"" || c == "\\" { out.append("\\") }
            out.append(c)
        }
        return out + "\""
    }
}
