//! A batch encoded as parts: its header and small fields in one buffer, the records'
//! large keys and values borrowed where they are. Written with one vectored write
//! (`pwritev`), each byte of a large value is copied once, by the kernel, instead
//! of once into a buffer and again into the file.

use super::encode::{encode_records, fill_header, BatchMeta, RecordParts, Sink};
use super::{HEADER_LEN, POS_CRC, POS_MAGIC};

/// Keys and values from this size on are borrowed, not copied: below it a part costs
/// more (an iovec, a separate CRC update) than the copy it saves.
pub(crate) const BORROW_MIN_BYTES: usize = 4096;

/// One piece of a scattered batch, in order.
#[derive(Clone, Copy, Debug)]
enum Part<'r> {
    /// `small[start..end]`.
    Copied(usize, usize),
    Borrowed(&'r [u8]),
}

/// A whole batch as parts (see the module notes); [`Scattered::parts`] in order are
/// exactly the bytes [`super::encode_into`] would write.
#[derive(Debug)]
pub(crate) struct Scattered<'r> {
    small: Vec<u8>,
    parts: Vec<Part<'r>>,
    /// Where the copied bytes not yet in a part start.
    open_from: usize,
    len: usize,
}

impl<'r> Sink<'r> for Scattered<'r> {
    #[inline]
    fn put(&mut self, b: u8) {
        self.small.push(b);
        self.len += 1;
    }

    #[inline]
    fn put_slice(&mut self, b: &[u8]) {
        self.small.extend_from_slice(b);
        self.len += b.len();
    }

    fn put_borrowed(&mut self, b: &'r [u8]) {
        if b.len() < BORROW_MIN_BYTES {
            return self.put_slice(b);
        }
        self.close_copied();
        self.parts.push(Part::Borrowed(b));
        self.len += b.len();
    }
}

impl<'r> Scattered<'r> {
    /// Encodes a batch of `records` (the same bytes as [`super::encode_into`]), its
    /// CRC computed over the parts.
    pub(crate) fn encode(
        meta: BatchMeta,
        records: impl IntoIterator<Item = RecordParts<'r>>,
    ) -> Scattered<'r> {
        let mut s = Scattered {
            small: vec![0; HEADER_LEN],
            parts: Vec::new(),
            open_from: 0,
            len: HEADER_LEN,
        };
        let summary = encode_records(&mut s, records);
        s.close_copied();
        fill_header(&mut s.small[..HEADER_LEN], s.len, meta, &summary);
        // The header is the first part: copied, at least HEADER_LEN long.
        let mut crc = crc32fast::Hasher::new();
        let mut first = true;
        for part in s.parts() {
            crc.update(if first { &part[POS_MAGIC..] } else { part });
            first = false;
        }
        let crc = crc.finalize().to_le_bytes();
        s.small[POS_CRC..POS_CRC + 4].copy_from_slice(&crc);
        s
    }

    /// [`super::withhold_crc`] for a scattered batch: its CRC field gets the CRC's
    /// complement, and the CRC comes back to be put back once the batch is to be
    /// published.
    pub(crate) fn withhold_crc(&mut self) -> [u8; 4] {
        super::withhold_crc(&mut self.small[..HEADER_LEN])
    }

    /// Ends the run of copied bytes as a part.
    fn close_copied(&mut self) {
        if self.small.len() > self.open_from {
            self.parts
                .push(Part::Copied(self.open_from, self.small.len()));
            self.open_from = self.small.len();
        }
    }

    /// The batch's bytes, in order.
    pub(crate) fn parts(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.parts.iter().map(|p| match *p {
            Part::Copied(start, end) => &self.small[start..end],
            Part::Borrowed(b) => b,
        })
    }

    /// The batch's length in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{decode_with, encode_into, encoded_len};
    use crate::record::{Record, RecordRef};

    /// Every mix of small and large keys, values and headers comes out byte for byte
    /// as the contiguous encoding, and decodes (CRC included) to the same records.
    #[test]
    fn parts_are_the_contiguous_encoding_byte_for_byte() {
        let big = vec![7u8; BORROW_MIN_BYTES];
        let bigger = vec![9u8; 3 * BORROW_MIN_BYTES + 5];
        let headers = [("h", &b"v"[..]), ("big", &big[..])];
        let records = [
            RecordRef::new(&bigger),
            RecordRef::keyed(&big, b"small"),
            RecordRef {
                key: None,
                value: None,
                headers: &headers,
                timestamp: Some(-5),
            },
            RecordRef::keyed(b"k", &bigger[..BORROW_MIN_BYTES - 1]),
            RecordRef::new(&big),
        ];
        let meta = BatchMeta {
            base_offset: 41,
            last_offset_delta: records.len() as u32 - 1,
            append_time: 1_700_000_000_000,
            delete_horizon: None,
        };
        let parts = || {
            records
                .iter()
                .enumerate()
                .map(|(i, r)| RecordParts::from_ref(r, i as u32, 99))
        };
        let len = encoded_len(parts());
        let mut contiguous = vec![0u8; len];
        encode_into(&mut contiguous, meta, parts()).unwrap();
        let scattered = Scattered::encode(meta, parts());
        assert_eq!(scattered.len(), len);
        assert!(
            scattered.parts().count() >= 6,
            "large fields are separate parts"
        );
        let joined: Vec<u8> = scattered.parts().flatten().copied().collect();
        assert_eq!(joined, contiguous);
        let batch = decode_with(&joined, &crc32fast::Hasher::new()).unwrap();
        let values: Vec<Option<usize>> = batch
            .records()
            .map(|r| r.unwrap().value.map(<[u8]>::len))
            .collect();
        assert_eq!(
            values,
            [
                Some(bigger.len()),
                Some(5),
                None,
                Some(BORROW_MIN_BYTES - 1),
                Some(big.len())
            ]
        );
        // Owned records take the same path.
        let owned = [Record::new(bigger.clone())];
        let one = || owned.iter().map(|r| RecordParts::from_record(r, 0, 3));
        let mut c = vec![0u8; encoded_len(one())];
        let meta = BatchMeta {
            last_offset_delta: 0,
            ..meta
        };
        encode_into(&mut c, meta, one()).unwrap();
        let s = Scattered::encode(meta, one());
        assert_eq!(s.parts().flatten().copied().collect::<Vec<u8>>(), c);
    }
}
