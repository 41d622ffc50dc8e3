package policy

import "strings"

// iso3166 lists the ISO 3166-1 alpha-2 country codes (249, checked against
// Debian's iso-codes 3166-1 list), plus XK (Kosovo), a user-assigned code
// that GeoNames-based databases use.
const iso3166 = `
AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ
BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS BT BV BW BY BZ
CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ
DE DJ DK DM DO DZ
EC EE EG EH ER ES ET
FI FJ FK FM FO FR
GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY
HK HM HN HR HT HU
ID IE IL IM IN IO IQ IR IS IT
JE JM JO JP
KE KG KH KI KM KN KP KR KW KY KZ
LA LB LC LI LK LR LS LT LU LV LY
MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ
NA NC NE NF NG NI NL NO NP NR NU NZ
OM
PA PE PF PG PH PK PL PM PN PR PS PT PW PY
QA
RE RO RS RU RW
SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ
TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ
UA UG UM US UY UZ
VA VC VE VG VI VN VU
WF WS
XK
YE YT
ZA ZM ZW
`

// countries is the set of valid country codes, as a [countrySet].
var countries = func() countrySet {
	var s countrySet
	for _, c := range strings.Fields(iso3166) {
		s.add(c)
	}
	return s
}()

// countrySet is a set of two-letter upper-case codes as a bitmap: a
// membership test is an index and a mask, with no hashing or allocation.
type countrySet [(26*26 + 63) / 64]uint64

// countryIndex returns the bit of code, or -1 when code is not two
// upper-case ASCII letters.
func countryIndex(code string) int {
	if len(code) != 2 || code[0] < 'A' || code[0] > 'Z' || code[1] < 'A' || code[1] > 'Z' {
		return -1
	}
	return int(code[0]-'A')*26 + int(code[1]-'A')
}

func (s *countrySet) add(code string) {
	if i := countryIndex(code); i >= 0 {
		s[i/64] |= 1 << (i % 64)
	}
}

func (s *countrySet) has(code string) bool {
	i := countryIndex(code)
	return i >= 0 && s[i/64]&(1<<(i%64)) != 0
}

// subsetOf reports whether every code of s is in t.
func (s *countrySet) subsetOf(t *countrySet) bool {
	for i := range s {
		if s[i]&^t[i] != 0 {
			return false
		}
	}
	return true
}
