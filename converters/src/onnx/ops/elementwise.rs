//! Element-wise ops: unary math/activations, binary arithmetic, comparisons,
//! logic, variadic Sum/Mean/Max/Min, Where, Clip.

use crate::conv_invalid;
use crate::onnx::registry::{ConvResult, NodeCtx, Registry};
use floe_engine::ops::elementwise::{BinaryOp, ElementwiseOp, UnaryOp, VariadicOp};
use floe_engine::Op;

fn u(op: UnaryOp) -> ConvResult<Op> {
    Ok(ElementwiseOp::Unary(op).into())
}

fn b(op: BinaryOp) -> ConvResult<Op> {
    Ok(ElementwiseOp::Binary(op).into())
}

fn v(op: VariadicOp) -> ConvResult<Op> {
    Ok(ElementwiseOp::Variadic(op).into())
}

pub fn register(r: &mut Registry) {
    use UnaryOp as U;
    r.add("Neg", 1, 13, |_| u(U::Neg));
    r.add("Abs", 1, 13, |_| u(U::Abs));
    r.add("Sign", 9, 13, |_| u(U::Sign));
    r.add("Exp", 1, 13, |_| u(U::Exp));
    r.add("Log", 1, 13, |_| u(U::Log));
    r.add("Sqrt", 1, 13, |_| u(U::Sqrt));
    r.add("Reciprocal", 1, 13, |_| u(U::Reciprocal));
    r.add("Floor", 1, 13, |_| u(U::Floor));
    r.add("Ceil", 1, 13, |_| u(U::Ceil));
    r.add("Round", 11, 22, |_| u(U::Round));
    r.add("Sin", 7, 22, |_| u(U::Sin));
    r.add("Cos", 7, 22, |_| u(U::Cos));
    r.add("Tan", 7, 22, |_| u(U::Tan));
    r.add("Asin", 7, 22, |_| u(U::Asin));
    r.add("Acos", 7, 22, |_| u(U::Acos));
    r.add("Atan", 7, 22, |_| u(U::Atan));
    r.add("Sinh", 9, 22, |_| u(U::Sinh));
    r.add("Cosh", 9, 22, |_| u(U::Cosh));
    r.add("Asinh", 9, 22, |_| u(U::Asinh));
    r.add("Acosh", 9, 22, |_| u(U::Acosh));
    r.add("Atanh", 9, 22, |_| u(U::Atanh));
    r.add("Erf", 9, 13, |_| u(U::Erf));
    r.add("Relu", 1, 14, |_| u(U::Relu));
    r.add("Sigmoid", 1, 13, |_| u(U::Sigmoid));
    r.add("Tanh", 1, 13, |_| u(U::Tanh));
    r.add("Softplus", 1, 22, |_| u(U::Softplus));
    r.add("Softsign", 1, 22, |_| u(U::Softsign));
    r.add("Mish", 18, 22, |_| u(U::Mish));
    r.add("HardSwish", 14, 22, |_| u(U::HardSwish));
    r.add("Elu", 6, 22, |c| u(U::Elu { alpha: c.float_or("alpha", 1.0)? }));
    r.add("Selu", 6, 22, |c| {
        u(U::Selu { alpha: c.float_or("alpha", 1.673_263_2)?, gamma: c.float_or("gamma", 1.050_701)? })
    });
    r.add("Celu", 12, 12, |c| u(U::Celu { alpha: c.float_or("alpha", 1.0)? }));
    r.add("LeakyRelu", 6, 16, |c| u(U::LeakyRelu { alpha: c.float_or("alpha", 0.01)? }));
    r.add("ThresholdedRelu", 10, 22, |c| u(U::ThresholdedRelu { alpha: c.float_or("alpha", 1.0)? }));
    r.add("HardSigmoid", 6, 22, |c| {
        u(U::HardSigmoid { alpha: c.float_or("alpha", 0.2)?, beta: c.float_or("beta", 0.5)? })
    });
    r.add("Swish", 24, 24, |c| u(U::Swish { alpha: c.float_or("alpha", 1.0)? }));
    r.add("Gelu", 20, 20, |c| {
        let approx = c.string("approximate")?.unwrap_or_else(|| "none".into());
        match approx.as_str() {
            "none" => u(U::Gelu { tanh_approx: false }),
            "tanh" => u(U::Gelu { tanh_approx: true }),
            other => conv_invalid!("Gelu approximate='{other}' (expected none or tanh)"),
        }
    });
    r.add("Shrink", 9, 9, |c| u(U::Shrink { bias: c.float_or("bias", 0.0)?, lambd: c.float_or("lambd", 0.5)? }));
    r.add("Not", 1, 1, |_| u(U::Not));
    r.add("BitwiseNot", 18, 18, |_| u(U::BitwiseNot));
    r.add("IsNaN", 9, 20, |_| u(U::IsNaN));
    r.add("IsInf", 10, 20, |c| {
        u(U::IsInf {
            detect_negative: c.int_or("detect_negative", 1)? != 0,
            detect_positive: c.int_or("detect_positive", 1)? != 0,
        })
    });

    use BinaryOp as B;
    r.add("Add", 7, 14, |_| b(B::Add));
    r.add("Sub", 7, 14, |_| b(B::Sub));
    r.add("Mul", 7, 14, |_| b(B::Mul));
    r.add("Div", 7, 14, |_| b(B::Div));
    r.add("Pow", 7, 15, |_| b(B::Pow));
    r.add("Mod", 10, 13, |c| b(B::Mod { fmod: c.int_or("fmod", 0)? != 0 }));
    r.add("PRelu", 7, 16, |_| b(B::PRelu));
    r.add("Equal", 7, 19, |_| b(B::Equal));
    r.add("Less", 7, 13, |_| b(B::Less));
    r.add("LessOrEqual", 12, 16, |_| b(B::LessOrEqual));
    r.add("Greater", 7, 13, |_| b(B::Greater));
    r.add("GreaterOrEqual", 12, 16, |_| b(B::GreaterOrEqual));
    r.add("And", 7, 7, |_| b(B::And));
    r.add("Or", 7, 7, |_| b(B::Or));
    r.add("Xor", 7, 7, |_| b(B::Xor));
    r.add("BitShift", 11, 11, |c| match c.string("direction")?.as_deref() {
        Some("LEFT") => b(B::BitShiftLeft),
        Some("RIGHT") => b(B::BitShiftRight),
        other => conv_invalid!("BitShift direction {other:?} (expected LEFT or RIGHT)"),
    });
    r.add("BitwiseAnd", 18, 18, |_| b(B::BitwiseAnd));
    r.add("BitwiseOr", 18, 18, |_| b(B::BitwiseOr));
    r.add("BitwiseXor", 18, 18, |_| b(B::BitwiseXor));

    r.add("Sum", 8, 13, |_| v(VariadicOp::Sum));
    r.add("Mean", 8, 13, |_| v(VariadicOp::Mean));
    r.add("Max", 8, 13, |_| v(VariadicOp::Max));
    r.add("Min", 8, 13, |_| v(VariadicOp::Min));
    r.add("Where", 9, 16, |_| Ok(ElementwiseOp::Where.into()));
    r.add("Clip", 6, 13, |c: &NodeCtx| {
        if c.opset < 11 {
            Ok(ElementwiseOp::Clip { min: Some(c.float_or("min", f32::MIN)?), max: Some(c.float_or("max", f32::MAX)?) }
                .into())
        } else {
            Ok(ElementwiseOp::Clip { min: None, max: None }.into())
        }
    });
}
