//! Tests of the tensor type: constructors, views, copy-on-write, concatenation, errors.
use super::*;
use crate::SharedElements;

fn iota(shape: &[usize]) -> Tensor {
    let n = numel_of(shape);
    Tensor::from_f32((0..n).map(|i| i as f32).collect(), shape).unwrap()
}

#[test]
fn from_f32_rejects_wrong_length() {
    let err = Tensor::from_f32(vec![0.0; 5], &[2, 3]).unwrap_err();
    assert!(matches!(
        err,
        OpError::DataLength {
            expected: 6,
            got: 5,
            ..
        }
    ));
    let err = Tensor::from_bf16(vec![bf16::ZERO; 7], &[2, 3]).unwrap_err();
    assert!(matches!(
        err,
        OpError::DataLength {
            expected: 6,
            got: 7,
            ..
        }
    ));
}

#[test]
fn accessors_and_dtype_errors() {
    let t = iota(&[2, 3, 4]);
    assert_eq!(t.shape(), &[2, 3, 4]);
    assert_eq!(t.rank(), 3);
    assert_eq!(t.numel(), 24);
    assert_eq!(t.size_bytes(), 96);
    assert_eq!(t.dims::<3>().unwrap(), [2, 3, 4]);
    assert!(matches!(t.dims::<4>(), Err(OpError::Shape { .. })));
    assert!(matches!(t.dim(3), Err(OpError::OutOfRange { .. })));
    assert!(matches!(t.as_bf16(), Err(OpError::DType { .. })));
    let b = t.to_dtype(DType::Bf16);
    assert_eq!(b.size_bytes(), 48);
    assert!(matches!(b.as_f32(), Err(OpError::DType { .. })));
    assert_eq!(b.to_f32_vec(), t.to_f32_vec());
}

#[test]
fn narrow_leading_is_a_view_and_inner_copies() {
    let t = iota(&[4, 3, 2]);
    let v = t.narrow(0, 1, 2).unwrap();
    assert!(v.shares_storage(&t));
    assert_eq!(v.shape(), &[2, 3, 2]);
    assert_eq!(v.as_f32().unwrap()[0], 6.0);
    let c = t.narrow(1, 1, 2).unwrap();
    assert!(!c.shares_storage(&t));
    assert_eq!(c.shape(), &[4, 2, 2]);
    assert_eq!(&c.as_f32().unwrap()[..4], &[2.0, 3.0, 4.0, 5.0]);
    let s = t.select(3).unwrap();
    assert_eq!(s.shape(), &[3, 2]);
    assert_eq!(s.as_f32().unwrap()[0], 18.0);
    // a view of a view with a unit leading dim stays a view
    let u = t.reshape(&[1, 4, 6]).unwrap().narrow(1, 2, 1).unwrap();
    assert!(u.shares_storage(&t));
    assert_eq!(u.as_f32().unwrap()[0], 12.0);
    assert!(matches!(t.narrow(0, 3, 2), Err(OpError::OutOfRange { .. })));
    assert!(matches!(
        t.narrow(0, usize::MAX, 2),
        Err(OpError::OutOfRange { .. })
    ));
    assert!(matches!(t.narrow(5, 0, 1), Err(OpError::OutOfRange { .. })));
    assert!(matches!(t.select(4), Err(OpError::OutOfRange { .. })));
}

#[test]
fn reshape_checks_numel() {
    let t = iota(&[4, 6]);
    assert!(matches!(
        t.reshape(&[usize::MAX, 3]),
        Err(OpError::Shape { .. })
    ));
    assert!(matches!(
        Tensor::from_f32(vec![0.0; 2], &[usize::MAX, 2]),
        Err(OpError::DataLength { .. })
    ));
    assert_eq!(t.reshape(&[2, 12]).unwrap().shape(), &[2, 12]);
    assert!(matches!(t.reshape(&[5, 5]), Err(OpError::Shape { .. })));
}

#[test]
fn mutation_is_copy_on_write() {
    let t = iota(&[4, 2]);
    let mut v = t.narrow(0, 2, 2).unwrap();
    v.as_f32_mut().unwrap()[0] = -1.0;
    assert_eq!(t.as_f32().unwrap()[4], 4.0);
    assert_eq!(v.as_f32().unwrap(), &[-1.0, 5.0, 6.0, 7.0]);
    let mut u = Tensor::zeros(&[3], DType::Bf16);
    u.as_bf16_mut().unwrap()[1] = bf16::from_f32(2.0);
    assert_eq!(u.to_f32_vec(), vec![0.0, 2.0, 0.0]);
    assert!(matches!(u.as_f32_mut(), Err(OpError::DType { .. })));
}

#[test]
fn cat_inverts_narrow() {
    let t = iota(&[2, 5, 3]);
    let a = t.narrow(1, 0, 2).unwrap();
    let b = t.narrow(1, 2, 3).unwrap();
    let c = Tensor::cat(&[&a, &b], 1).unwrap();
    assert_eq!(c.shape(), t.shape());
    assert_eq!(c.as_f32().unwrap(), t.as_f32().unwrap());
    assert!(matches!(
        Tensor::cat(&[&a, &t], 0),
        Err(OpError::Shape { .. })
    ));
    let bf = b.to_dtype(DType::Bf16);
    assert!(matches!(
        Tensor::cat(&[&a, &bf], 1),
        Err(OpError::DType { .. })
    ));
    assert!(matches!(
        Tensor::cat(&[], 0),
        Err(OpError::InvalidArgument { .. })
    ));
    assert!(matches!(
        Tensor::cat(&[&a], 3),
        Err(OpError::OutOfRange { .. })
    ));
}

/// A borrowed run of bf16 elements standing in for a memory-mapped file.
struct Pages(Vec<bf16>);

impl SharedElements<bf16> for Pages {
    fn elements(&self) -> &[bf16] {
        &self.0
    }
}

fn shared_iota(len: usize) -> Arc<Pages> {
    Arc::new(Pages((0..len).map(|i| bf16::from_f32(i as f32)).collect()))
}

#[test]
fn shared_storage_is_read_in_place_and_copied_on_write() {
    let pages = shared_iota(20);
    let t = Tensor::from_shared_bf16(pages.clone(), 4, &[2, 3]).unwrap();
    assert_eq!(t.to_f32_vec(), vec![4.0, 5.0, 6.0, 7.0, 8.0, 9.0]);
    assert_eq!(t.as_bf16().unwrap().as_ptr(), pages.0[4..].as_ptr());
    let mut w = t.clone();
    w.as_bf16_mut().unwrap()[0] = bf16::from_f32(-1.0);
    assert_eq!(w.to_f32_vec()[0], -1.0);
    assert_eq!(t.to_f32_vec()[0], 4.0, "the shared pages are never written");
    assert_eq!(pages.0[4].to_f32(), 4.0);
    let err = Tensor::from_shared_bf16(pages, 15, &[2, 3]).unwrap_err();
    assert!(
        matches!(
            err,
            OpError::DataLength {
                expected: 6,
                got: 5,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn column_views_read_rows_in_place() {
    let m = iota(&[3, 5]);
    let v = m.columns(1, 3).unwrap();
    assert!(!v.is_contiguous());
    assert_eq!((v.shape(), v.row_stride()), (&[3, 3][..], 5));
    assert_eq!(
        v.to_f32_vec(),
        vec![1.0, 2.0, 3.0, 6.0, 7.0, 8.0, 11.0, 12.0, 13.0]
    );
    let (rows, stride) = v.f32_rows().unwrap();
    assert_eq!((rows.len(), stride), (13, 5));
    assert_eq!(rows[5..8], [6.0, 7.0, 8.0]);
    // A view of a view keeps the matrix's stride.
    let vv = v.columns(1, 2).unwrap();
    assert_eq!(vv.to_f32_vec(), vec![2.0, 3.0, 7.0, 8.0, 12.0, 13.0]);
    // Contiguous accessors refuse the view; copying accessors serve it.
    let err = v.as_f32().unwrap_err();
    assert!(err.to_string().contains("not contiguous"), "{err}");
    assert!(v.contiguous().is_contiguous());
    assert_eq!(v.reshape(&[9]).unwrap().to_f32_vec(), v.to_f32_vec());
    assert_eq!(v.select(2).unwrap().to_f32_vec(), vec![11.0, 12.0, 13.0]);
    assert_eq!(v.narrow(0, 1, 1).unwrap().to_f32_vec(), vec![6.0, 7.0, 8.0]);
    assert_eq!(
        Tensor::cat(&[&v, &v], 0).unwrap().to_f32_vec()[9..12],
        [1.0, 2.0, 3.0]
    );
    let mut w = v.clone();
    w.as_f32_mut().unwrap()[0] = 100.0;
    assert_eq!(w.to_f32_vec()[..2], [100.0, 2.0]);
    assert_eq!(m.to_f32_vec()[1], 1.0, "writing a view copies it");
    // Range and rank errors.
    assert!(m.columns(3, 3).is_err());
    assert!(iota(&[2, 2, 2]).columns(0, 1).is_err());
    assert_eq!(
        iota(&[2, 4])
            .columns(0, 0)
            .unwrap()
            .f32_rows()
            .unwrap()
            .0
            .len(),
        0
    );
}

#[test]
#[allow(clippy::single_range_in_vec_init)] // one-range lists are the point here
fn gather_columns_picks_ranges_side_by_side() {
    let t = iota(&[3, 5]); // row i: 5i .. 5i + 4
    let g = t.gather_columns(&[3..5, 0..1]).unwrap();
    assert_eq!(g.shape(), &[3, 3]);
    assert_eq!(
        g.as_f32().unwrap(),
        &[3.0, 4.0, 0.0, 8.0, 9.0, 5.0, 13.0, 14.0, 10.0]
    );
    // From a column view, and in bf16.
    let view = t.columns(1, 3).unwrap();
    let g = view.gather_columns(&[2..3, 0..1]).unwrap();
    assert_eq!(g.as_f32().unwrap(), &[3.0, 1.0, 8.0, 6.0, 13.0, 11.0]);
    let b = Tensor::from_f32_as(t.as_f32().unwrap(), &[3, 5], DType::Bf16).unwrap();
    let g = b.gather_columns(&[4..5]).unwrap();
    assert_eq!(g.f32_values().as_ref(), &[4.0, 9.0, 14.0]);
    assert_eq!(t.gather_columns(&[]).unwrap().shape(), &[3, 0]);
    assert!(t.gather_columns(&[4..6]).is_err());
    assert!(view.gather_columns(&[0..4]).is_err());
    assert!(iota(&[2, 2, 2]).gather_columns(&[0..1]).is_err());
}
