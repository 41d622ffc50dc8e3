package report

import "strconv"

// Keys of the UDP reply only, written after the keys of [Order].
const (
	// KeyProbe echoes the first line of the datagram the reply answers,
	// so that a prober can match replies to requests (quoted when it
	// holds spaces).
	KeyProbe = "probe"
	// KeyToken is the flow's address-validation token: a datagram of the
	// same flow whose first line holds the word token=<value> proves that
	// its source receives replies, which lifts the 3x amplification bound.
	KeyToken = "token"
	// KeyTruncated is "1" on a reply cut at a key boundary to fit the
	// amplification bound.
	KeyTruncated = "truncated"
)

// AppendPair appends " key=value" (the line form's quoting) to dst, without
// the leading space when dst is empty.
func AppendPair(dst []byte, key, v string) []byte {
	return appendPair(dst, 0, key, v, true)
}

// truncatedPair is what Cut appends.
const truncatedPair = KeyTruncated + "=1"

// Cut shortens the line-form report line (no newline) so that it, a space,
// "truncated=1" and a newline fit in n bytes: it keeps the longest run of
// whole leading pairs that fits and appends " truncated=1". When not even
// "truncated=1\n" fits, it returns line[:0]. The result reuses line's
// array. A line that is not in the line form is cut at its last space
// outside quotes that fits.
func Cut(line []byte, n int) []byte {
	if n < len(truncatedPair)+1 {
		return line[:0]
	}
	keep := 0 // end of the last whole pair that fits
	for i := 0; i < len(line); {
		// Scan one pair: key=value, the value maybe quoted.
		j := i
		for j < len(line) && line[j] != '=' && line[j] != ' ' {
			j++
		}
		if j < len(line) && line[j] == '=' {
			j++
			if j < len(line) && line[j] == '"' {
				q, err := strconv.QuotedPrefix(string(line[j:]))
				if err != nil {
					break
				}
				j += len(q)
			}
		}
		for j < len(line) && line[j] != ' ' {
			j++
		}
		if j+1+len(truncatedPair)+1 > n {
			break
		}
		keep = j
		i = j + 1
	}
	out := line[:keep]
	if keep > 0 {
		out = append(out, ' ')
	}
	return append(out, truncatedPair...)
}
