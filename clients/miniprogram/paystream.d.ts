// Types of paystream.js (CommonJS; `import { createClient } from './paystream.js'` works too).

export type OrderStatus =
  | 'pending_payment' | 'paid' | 'partially_refunded' | 'refunded' | 'closed' | 'needs_review';

export interface User { id: string; openid: string; unionid?: string; phone?: string }
export interface Session { token: string; expires_at: string; user: User }
export interface Product { sku: string; name: string; price_fen: number; active: boolean }
export interface OrderLine { sku: string; name: string; quantity: number; unit_price_fen: number; line_total_fen: number }
export interface Order {
  id: string; out_trade_no: string; status: OrderStatus;
  total_fen: number; paid_fen: number; refunded_fen: number; items: OrderLine[];
  channel?: 'wechatpay_v3' | 'wechatpay_v2'; transaction_id?: string;
  created_at: string; expires_at: string; paid_at?: string;
  [more: string]: unknown;
}
export interface OrderPage { page: number; per_page: number; total_items: number; total_pages: number; items: Order[] }
export interface Card { card_id: string; code: string }
export interface PayResult {
  /** `timeout`: not settled in time — show "confirming", never "failed". */
  status: Exclude<OrderStatus, 'pending_payment'> | 'cancelled_by_user' | 'timeout';
  order?: Order;
}
export interface TokenStorage { get(key: string): any; set(key: string, value: any): void; remove(key: string): void }

export interface ClientOptions {
  /** e.g. `https://pay.example.com`, or `http://127.0.0.1:8080` in DevTools against a local engine. */
  baseUrl: string;
  /** The mini-program's `wx` (or a stand-in with the same callback APIs). */
  wx: any;
  /** Where the token is kept; default wx.setStorageSync/getStorageSync, else memory. */
  storage?: TokenStorage;
  /** Per-request timeout for wx.request, ms (default 15000). */
  timeoutMs?: number;
}

export interface PaystreamClient {
  login(): Promise<Session>;
  logout(): void;
  token(): string | null;
  request<T = any>(method: string, path: string, body?: unknown, headers?: Record<string, string>): Promise<T>;
  products(): Promise<Product[]>;
  placeOrder(items: { sku: string; quantity: number }[],
             opts?: { note?: string; card?: Card; idempotencyKey?: string }): Promise<Order>;
  order(id: string): Promise<Order>;
  orders(filter?: { page?: number; per_page?: number; status?: OrderStatus }): Promise<OrderPage>;
  cancel(id: string): Promise<Order>;
  pay(orderId: string, opts?: { channel?: 'wechatpay_v3' | 'wechatpay_v2'; timeoutMs?: number; intervalMs?: number }): Promise<PayResult>;
  bindPhone(code: string): Promise<{ phone: string; country_code: string }>;
  subscribe(templateIds: string[]): Promise<string[]>;
  cardExt(cardId: string): Promise<string>;
}

export interface PaystreamError extends Error {
  /** HTTP status; 0 when no answer arrived. */
  status: number;
  /** The engine's snake_case code, or network_error, http_error, wx_login_failed, wx_unavailable,
   *  request_payment_failed, subscribe_failed. */
  code: string;
  details?: unknown;
}
export const PaystreamError: { (status: number, code: string, message?: string, details?: unknown): PaystreamError; prototype: PaystreamError };
export const TOKEN_KEY: string;
export function createClient(options: ClientOptions): PaystreamClient;
